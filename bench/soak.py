"""A long churn run: does the shim's memory settle, or grow with every pod it has seen?

Populates N pods (default 110), then runs the kubelet-like mixed load of kubelet_bench.py (relist
every second, status, the 10 s stats sweep, one pod replaced every 2 s) for --minutes (default
30). The shim's RSS is sampled every --sample-seconds; growth is measured from the first sample
after --warmup-minutes (caches and pools fill in the first minute) to the end. Also reported:
CPU seconds per minute, open file descriptors and threads at start and end, pods churned, errors.
Bounded in time; talks only to local unix sockets. Output: a table and a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubelet_bench import MixedLoad, Pods, Shim, percentiles  # noqa: E402
from measure import cpu_seconds, dockerd_pid, rss_bytes  # noqa: E402

GROWTH_TARGET = 0.10


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=110, help="pods kept running (default 110)")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the churn run (default 30)")
    parser.add_argument("--warmup-minutes", type=float, default=1.0, help="load before the baseline sample")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="RSS sampling period (default 30)")
    parser.add_argument("--json", default="bench-soak.json", help="where the JSON goes")
    args = parser.parse_args()

    client = docker.APIClient(version="auto", timeout=300)
    shim = Shim(["--log-level", "info"]).start()
    pid = shim.process.pid
    pods = Pods(shim.runtime, Path(shim.dir) / "pod-logs")
    samples: list[tuple[float, int]] = []
    try:
        for index in range(args.pods):
            pods.create(index)
        daemon = dockerd_pid()
        load = MixedLoad(shim.runtime, shim.images, client, pods, shim.endpoint)
        churned_before = len(pods.run_latencies)
        runner = threading.Thread(target=load.run, args=(args.minutes * 60,), daemon=True)
        started = time.monotonic()
        start_cpu, start_dockerd = cpu_seconds(pid), cpu_seconds(daemon)
        start_fds, start_threads = open_descriptors(pid), thread_count(pid)
        runner.start()
        while runner.is_alive():
            samples.append((time.monotonic() - started, rss_bytes(pid)))
            print(f"{samples[-1][0] / 60:6.1f} min  RSS {samples[-1][1] / 2**20:6.1f} MiB  "
                  f"pods churned {len(pods.run_latencies) - churned_before}", flush=True)
            runner.join(timeout=args.sample_seconds)
        elapsed_minutes = (time.monotonic() - started) / 60
        samples.append((time.monotonic() - started, rss_bytes(pid)))
        baseline = next((rss for at, rss in samples if at >= args.warmup_minutes * 60), samples[0][1])
        final = samples[-1][1]
        report = {
            "pods": args.pods,
            "minutes": elapsed_minutes,
            "pods_churned": len(pods.run_latencies) - churned_before,
            "rss_baseline_mib": baseline / 2**20,
            "rss_final_mib": final / 2**20,
            "rss_max_mib": max(rss for _, rss in samples) / 2**20,
            "rss_growth": final / baseline - 1,
            "rss_samples_mib": [(round(at), round(rss / 2**20, 1)) for at, rss in samples],
            "shim_cpu_s_per_min": (cpu_seconds(pid) - start_cpu) / elapsed_minutes,
            "dockerd_cpu_s_per_min": (cpu_seconds(daemon) - start_dockerd) / elapsed_minutes,
            "fds": [start_fds, open_descriptors(pid)],
            "threads": [start_threads, thread_count(pid)],
            "relist": percentiles(load.relist_latencies),
            "errors": len(load.errors),
            "first_errors": load.errors[:5],
        }
    finally:
        pods.remove_all()
        if shim.stop() == 0:  # a failed shim keeps its directory, for its log
            shim.remove_files()
    Path(args.json).write_text(json.dumps(report, indent=2))
    verdict = "within" if report["rss_growth"] < GROWTH_TARGET else "OVER"
    print(f"\nsoak {report['minutes']:.1f} min at {args.pods} pods, {report['pods_churned']} pods churned, "
          f"{report['errors']} errors")
    print(f"  RSS {report['rss_baseline_mib']:.1f} -> {report['rss_final_mib']:.1f} MiB "
          f"(max {report['rss_max_mib']:.1f}): growth {100 * report['rss_growth']:+.1f}% "
          f"({verdict} the {100 * GROWTH_TARGET:.0f}% target)")
    print(f"  shim CPU {report['shim_cpu_s_per_min']:.2f} s/min, dockerd {report['dockerd_cpu_s_per_min']:.2f} s/min;"
          f" fds {report['fds'][0]} -> {report['fds'][1]}, threads {report['threads'][0]} -> {report['threads'][1]}")
    print(f"  relist p50 {report['relist']['p50']:.1f} ms, p99 {report['relist']['p99']:.1f} ms")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
