"""The Python side of kernelgate-bench's `kernel` subcommand.

Usage: bench_kernel.py --ours FILE [--rounds N] [--warmup N] [--starts N]

FILE is the connection file of our built-in kernel, already running. Prints JSON lines:
  {"case": "startup/ipykernel", "ms": median, "samples": [...]}   start_kernel -> first kernel_info reply
  {"case": "execute/jupyter_client->ipykernel", "median_us": .., "p99_us": .., "n": ..}
  {"case": "kernel_info/jupyter_client->ipykernel", ...}
  {"case": "execute/jupyter_client->ours", ...}, {"case": "kernel_info/jupyter_client->ours", ...}
  {"case": "memory/ipykernel", "mib": VmRSS}
  {"ipykernel": CONNECTION_FILE, "pid": PID}
then keeps that ipykernel running until a line arrives on stdin (kernelgate-bench measures its own
client against it meanwhile), shuts it down and prints {"done": true}.

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


def round_trips(kc, what, rounds, warmup):
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
    samples.sort()
    return {"median_us": nearest_rank(samples, 0.5), "p99_us": nearest_rank(samples, 0.99),
            "n": len(samples)}


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

    for what in ("execute", "kernel_info"):
        emit(dict(case=f"{what}/jupyter_client->ipykernel", **round_trips(kc, what, args.rounds, args.warmup)))

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
