"""Writes the committed starter corpora under fuzz/corpus/ from jupyter_client's own Session.

Run with the project's venv: .venv/bin/python fuzz/gen_corpus.py
decode seeds use the frame format of fuzz_targets/decode.rs: byte 0 = frame count, then per frame
a little-endian u16 length and the bytes. They are signed with the key decode.rs uses and dated
just after the epoch it uses, so they pass the whole keyed pipeline.
"""
import hashlib
import json
import os
import struct

from jupyter_client.session import Session

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"kernelgate-fuzz-key"
SESSION_ID = "9f1a2b3c-4d5e-4f60-8a7b-0c1d2e3f4a5b"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pack_frames(frames):
    assert len(frames) < 256
    out = bytearray([len(frames)])
    for f in frames:
        assert len(f) < 65536
        out += struct.pack("<H", len(f)) + bytes(f)
    return bytes(out)


def header(session, n, msg_type, date_frac):
    return {
        "msg_id": f"{SESSION_ID[:8]}-seed-{n:04d}",
        "msg_type": msg_type,
        "username": "fuzz",
        "session": SESSION_ID,
        "date": f"2026-01-01T00:00:00.{date_frac:06d}Z",
        "version": "5.4",
    }


def decode_seeds():
    s = Session(key=KEY, signature_scheme="hmac-sha256", username="fuzz", session=SESSION_ID)
    req = header(s, 1, "execute_request", 100000)
    shapes = [
        ("execute_request", [], req, {}, {"cellId": "c1"},
         {"code": "print('hé')\n1 + 1", "silent": False, "store_history": True,
          "user_expressions": {}, "allow_stdin": True, "stop_on_error": True}, []),
        ("kernel_info_request", [b"\x00k\x8bEg"], header(s, 2, "kernel_info_request", 200000),
         {}, {}, {}, []),
        ("execute_reply", [b"\x00k\x8bEg", b"client-two"], header(s, 3, "execute_reply", 300000),
         req, {"started": "2026-01-01T00:00:00.250000Z", "dependencies_met": True},
         {"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []}, []),
        ("stream", [b"kernel.abc.stream"], header(s, 4, "stream", 400000), req, {},
         {"name": "stdout", "text": "2\n"}, []),
        ("comm_msg", [b"kernel.abc.comm_msg"], header(s, 5, "comm_msg", 500000), req, {},
         {"comm_id": "c0ffee", "data": {"method": "update", "buffer_paths": [["x"]], "f": 1.5e-07,
          "big": 1e16}}, [bytes(range(64)), b""]),
        ("status", [], dict(header(s, 6, "status", 600000), subshell_id=None), req, {},
         {"execution_state": "idle"}, []),
    ]
    for name, ident, hdr, parent, metadata, content, buffers in shapes:
        msg = {"header": hdr, "parent_header": parent, "metadata": metadata, "content": content,
               "buffers": buffers}
        frames = s.serialize(msg, ident=ident) + buffers
        write("decode", name, pack_frames(frames))
    # The WebSocket framings, fed the same raw bytes.
    parts = [b"shell", json.dumps(req).encode(), b"{}", b"{}", b'{"code": "1"}', b"\x01\x02"]
    n = len(parts) + 1
    offs, off = [], 8 * (n + 1)
    offs.append(off)
    for p in parts:
        off += len(p)
        offs.append(off)
    v1 = struct.pack("<Q", n) + b"".join(struct.pack("<Q", o) for o in offs) + b"".join(parts)
    write("decode", "ws_v1", v1)
    body = json.dumps({"channel": "iopub", "header": req, "parent_header": {}, "metadata": {},
                       "content": {}, "buffer_paths": [["x"]]}).encode()
    bufs = [b"\xff" * 10]
    nb = len(bufs) + 1
    off = 4 * (nb + 1)
    legacy = struct.pack(">I", nb) + struct.pack(">I", off)
    off += len(body)
    for b in bufs:
        legacy += struct.pack(">I", off)
        off += len(b)
    write("decode", "ws_legacy_binary", legacy + body + b"".join(bufs))


def connection_seeds():
    base = {"shell_port": 53794, "iopub_port": 53795, "stdin_port": 53796, "control_port": 53797,
            "hb_port": 53798, "ip": "127.0.0.1", "key": "a0436f6c-1916498877fdd5c1a0d0b0e5e1f7e5a3",
            "transport": "tcp", "signature_scheme": "hmac-sha256", "kernel_name": "python3"}
    write("connection_file", "tcp_jupyter_client", json.dumps(base, indent=1).encode())
    ipc = dict(base, transport="ipc", ip="/tmp/kernel-7f3c", shell_port=1, iopub_port=2,
               stdin_port=3, control_port=4, hb_port=5, kernel_name="")
    write("connection_file", "ipc", json.dumps(ipc, indent=1).encode())
    curve = dict(base, curve_publickey="rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
                 curve_secretkey="JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6")
    write("connection_file", "curve", json.dumps(curve, indent=1).encode())
    v6 = dict(base, ip="::1", signature_scheme="hmac-sha512", jupyter_session="/home/u/x.ipynb")
    write("connection_file", "ipv6_extra", json.dumps(v6).encode())
    write("connection_file", "minimal", b'{"shell_port":0,"iopub_port":0,"stdin_port":0,'
                                        b'"control_port":0,"hb_port":0}')


def kernelspec_seeds():
    # As ipykernel 7.4 installs it.
    ipykernel = {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                 "display_name": "Python 3 (ipykernel)", "language": "python",
                 "metadata": {"debugger": True, "supported_encryption": ["curve"]},
                 "kernel_protocol_version": "5.5"}
    write("kernelspec", "ipykernel", json.dumps(ipykernel, indent=1).encode())
    full = {"argv": ["{prefix}/bin/python", "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                     "-f", "{connection_file}", "--res={resource_dir}", "{unknown}", "{"],
            "display_name": "Py", "language": "python", "env": {"PYTHONUNBUFFERED": "1"},
            "interrupt_mode": "message", "kernel_protocol_version": "5.5",
            "metadata": {"supported_encryption": ["curve"], "debugger": False},
            "codemirror_mode": {"name": "ipython", "version": 3}}
    write("kernelspec", "full", json.dumps(full).encode())
    write("kernelspec", "ir", json.dumps({
        "argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
        "display_name": "R", "language": "R"}).encode())


if __name__ == "__main__":
    decode_seeds()
    connection_seeds()
    kernelspec_seeds()
