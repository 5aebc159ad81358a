"""A line-oriented bridge to jupyter_client's Session, for interop tests and benchmarks.

Each input line is a JSON request; each output line the JSON answer. Frames travel base64-encoded.
ops:
  sign:   {scheme, key, msg_type, content, metadata?, parent?, ident?: [b64], buffers?: [b64]}
          -> {frames: [b64]}   (jupyter_client's serialize, then buffers, exactly as Session.send)
  verify: {scheme, key, frames: [b64]}
          -> {ok, idents, header, parent_header, metadata, content, buffers, raw: [b64 x4]} | {ok: false, error}
"""
import base64
import json
import sys

from jupyter_client.session import Session


def b64(b):
    return base64.b64encode(bytes(b)).decode()


def unb64(s):
    return base64.b64decode(s)


_sessions = {}


def session_for(scheme, key):
    k = (scheme, key)
    if k not in _sessions:
        _sessions[k] = Session(key=key.encode(), signature_scheme=scheme, username="peer")
    return _sessions[k]


def handle(req):
    s = session_for(req["scheme"], req["key"])
    op = req["op"]
    if op == "sign":
        msg = s.msg(req["msg_type"], content=req["content"], parent=req.get("parent"),
                    metadata=req.get("metadata"))
        ident = [unb64(i) for i in req.get("ident", [])]
        frames = s.serialize(msg, ident=ident or None)
        frames.extend(unb64(b) for b in req.get("buffers", []))
        return {"frames": [b64(f) for f in frames]}
    if op == "verify":
        frames = [unb64(f) for f in req["frames"]]
        try:
            idents, msg_list = s.feed_identities(frames, copy=True)
            msg = s.deserialize(msg_list, content=True, copy=True)
        except Exception as e:  # the test wants the reason, whatever it is
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        raw = msg_list[1:5]
        return {
            "ok": True,
            "idents": [b64(i) for i in idents],
            "msg_type": msg["header"]["msg_type"],
            "msg_id": msg["header"]["msg_id"],
            "content": msg["content"],
            "metadata": msg["metadata"],
            "parent_msg_id": msg["parent_header"].get("msg_id") if msg["parent_header"] else None,
            "buffers": [b64(b) for b in msg["buffers"]],
            "raw": [b64(r) for r in raw],
        }
    return {"ok": False, "error": f"unknown op {op}"}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        out = handle(json.loads(line))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
