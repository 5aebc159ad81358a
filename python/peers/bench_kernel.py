"""The Python side of kernelgate-bench's `kernel` subcommand.

Usage: bench_kernel.py --ours FILE [--rounds N] [--warmup N] [--starts N] [--blocks N]

FILE is the connection file of our built-in kernel, already running. Prints JSON lines:
  {"case": "startup/ipykernel", "ms": median, "samples": [...]}   start_kernel -> first kernel_info reply
  {"case": "execute/jupyter_client->ipykernel", "median_us": .., "p99_us": .., "n": ..}
  {"case": "kernel_info/jupyter_client->ipykernel", ...}
  {"case": "execute/jupyter_client->ours", ...}, {"case": "kernel_info/jupyter_client->ours", ...}
  {"case": "memory/ipykernel", "mib": VmRSS}
  {"ipykernel": CONNECTION_FILE, "pid": PID}
then keeps that ipykernel running until a line arrives on stdin (kernelgate-bench measures its own
client against it meanwhile), shuts it down and prints {"done": true}.

execute/jupyter_client->ipykernel is measured in --blocks blocks, each from a new client, and after
each block the script prints {"turn": K, "ipykernel": CONNECTION_FILE} and waits for a line on
stdin: kernelgate-bench measures a block of its own client against the same kernel meanwhile. Both
clients then meet the kernel in the same states (ipykernel slows as its history grows) and the
machine under the same load, and neither fills its unread IOPub queue.

Round trips: BlockingKernelClient.execute("1+1", reply=True) (request -> execute_reply on shell)
and kernel_info(reply=True), timed one by one with perf_counter after a warm-up. Percentiles are
nearest-rank, as on the Rust side.
"""
import argparse
import json
import math
import statistics
import sys
import time

from jupyter_client import BlockingKernelClient, KernelManager


def emit(obj):
    print(json.dumps(obj), flush=True)


def nearest_rank(sorted_samples, p):
    k = max(1, math.ceil(p * len(sorted_samples)))
    return sorted_samples[k - 1]


def samples_of(kc, what, rounds, warmup):
    """Times of `rounds` round trips (us), after `warmup` untimed ones."""
    if what == "execute":
        def one():
            reply = kc.execute("1+1", reply=True, timeout=30)
            assert reply["content"]["status"] == "ok", reply["content"]
    else:
        def one():
            kc.kernel_info(reply=True, timeout=30)
    for _ in range(warmup):
        one()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        one()
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def summary(samples):
    samples = sorted(samples)
    return {"median_us": nearest_rank(samples, 0.5), "p99_us": nearest_rank(samples, 0.99),
            "n": len(samples)}


def round_trips(kc, what, rounds, warmup):
    return summary(samples_of(kc, what, rounds, warmup))


def execute_in_turns(km, args):
    """execute round trips in blocks, each from a new client; our client's turn after each."""
    samples = []
    for block in range(args.blocks):
        # Block sizes that add up to --rounds exactly.
        n = args.rounds * (block + 1) // args.blocks - args.rounds * block // args.blocks
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        samples += samples_of(kc, "execute", n, max(20, args.warmup // args.blocks))
        kc.stop_channels()
        emit({"turn": block, "ipykernel": km.connection_file})
        if not sys.stdin.readline():
            raise SystemExit("kernelgate-bench went away during its turn")
    return summary(samples)


def vmrss_mib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


def start_ipykernel():
    """Starts an ipykernel; returns (km, kc, ms from start_kernel to the first kernel_info reply)."""
    km = KernelManager(kernel_name="python3")
    t0 = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.kernel_info(reply=True, timeout=60)
    ms = (time.perf_counter() - t0) * 1e3
    return km, kc, ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=10)
    args = ap.parse_args()

    # Startup: a few fresh kernels; the last one stays for the round trips.
    samples = []
    for i in range(args.starts):
        km, kc, ms = start_ipykernel()
        samples.append(ms)
        if i < args.starts - 1:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    emit({"case": "startup/ipykernel", "ms": statistics.median(samples), "samples": samples})
    kc.wait_for_ready(timeout=60)

    # No subscriber of ours stays connected through the turns: it would read the other client's
    # IOPub traffic in a thread of this process.
    kc.stop_channels()
    emit(dict(case="execute/jupyter_client->ipykernel", **execute_in_turns(km, args)))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    emit(dict(case="kernel_info/jupyter_client->ipykernel",
              **round_trips(kc, "kernel_info", args.rounds, args.warmup)))

    ours = BlockingKernelClient()
    ours.load_connection_file(args.ours)
    ours.start_channels()
    ours.wait_for_ready(timeout=30)
    for what in ("execute", "kernel_info"):
        emit(dict(case=f"{what}/jupyter_client->ours", **round_trips(ours, what, args.rounds, args.warmup)))
    ours.stop_channels()

    pid = km.provisioner.process.pid
    emit({"case": "memory/ipykernel", "mib": vmrss_mib(pid)})
    emit({"case": "memory/ipykernel RssAnon", "mib": vmrss_mib(pid, "RssAnon:")})
    # Our client then measures alone, as jupyter_client did: no second IOPub subscriber or
    # heartbeat of ours left connected (km shuts the kernel down through its own channel).
    kc.stop_channels()
    emit({"ipykernel": km.connection_file, "pid": pid})
    sys.stdin.readline()
    km.shutdown_kernel(now=False)
    emit({"done": True})


if __name__ == "__main__":
    main()
