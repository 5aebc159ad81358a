"""jupyter_client Session throughput, for kernelgate-bench's `wire` subcommand.

Usage: bench_session.py [--seconds S]
Prints one JSON object per line: {"case": ..., "per_s": msgs/s, "n": messages timed, "seconds": ...},
then {"done": true}. Cases (the same shapes kernelgate-bench times on our side):
  <shape>/sign    Session.msg + Session.serialize (new header, JSON, HMAC); buffers appended as
                  Session.send does.
  <shape>/verify  Session.feed_identities + Session.deserialize on distinct messages signed beforehand,
                  with jupyter_client's default digest history (replay check) on.
shapes: small (execute_request, ~120 B content), buf1m (small content + one 1 MiB buffer),
content64k (~64 KiB of content).
"""
import argparse
import json
import sys
import time

from jupyter_client.session import Session

KEY = b"kernelgate-bench-key-0123456789abcdef"


def shapes():
    small = {"code": "print('hello world')\n1 + 1", "silent": False, "store_history": True,
             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
    big = dict(small, code="x = 1  # " + "y" * (64 * 1024 - 40) + "\n")
    return {
        "small": (small, []),
        "buf1m": (small, [bytes(1 << 20)]),
        "content64k": (big, []),
    }


def timed(seconds, batch, prepare, run):
    """Times `run` over batches from `prepare` (untimed) until `seconds` of timed work."""
    total, n = 0.0, 0
    run(prepare())  # warm-up
    while total < seconds:
        items = prepare()
        t0 = time.perf_counter()
        run(items)
        total += time.perf_counter() - t0
        n += len(items)
    return n, total


def bench_sign(session, content, buffers, seconds, batch):
    def run(items):
        for _ in items:
            msg = session.msg("execute_request", content=content)
            frames = session.serialize(msg)
            frames.extend(buffers)

    return timed(seconds, batch, lambda: range(batch), run)


def bench_verify(session, content, buffers, seconds, batch):
    def prepare():
        return [session.serialize(session.msg("execute_request", content=content)) + buffers
                for _ in range(batch)]

    def run(items):
        for frames in items:
            idents, msg_list = session.feed_identities(frames, copy=True)
            session.deserialize(msg_list, content=True, copy=True)

    return timed(seconds, batch, prepare, run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    for name, (content, buffers) in shapes().items():
        # One session per shape, default digest history (replay check) and default packer.
        session = Session(key=KEY, signature_scheme="hmac-sha256", username="bench")
        batch = 256 if name == "small" else 200
        for case, (n, secs) in (
            ("sign", bench_sign(session, content, buffers, args.seconds, batch)),
            ("verify", bench_verify(session, content, buffers, args.seconds, batch)),
        ):
            print(json.dumps({"case": f"{name}/{case}", "per_s": n / secs, "n": n, "seconds": secs}),
                  flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
