"""Measuring helpers shared by the benchmarks: latency percentiles and process CPU and memory."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DOCKER_SOCKET_PATH = "/var/run/docker.sock"


def percentiles(samples: list[float]) -> dict[str, float]:
    """Milliseconds: p50, p95, p99 and max, with the count, from samples in seconds."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000

    return {"n": len(ordered), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1] * 1000}


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_ticks() -> tuple[int, int]:
    """(stolen, all) clock ticks of every CPU so far, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    stolen = fields[7] if len(fields) > 7 else 0
    return stolen, sum(fields[:8])


def steal_percent(before: tuple[int, int]) -> float:
    """The share of the machine's CPU time that its hypervisor gave to others since `before`."""
    stolen, total = cpu_ticks()
    return 100 * (stolen - before[0]) / max(total - before[1], 1)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dockerd_pid(socket_path: str = DOCKER_SOCKET_PATH) -> int | None:
    """The dockerd listening on the suite's socket (tests may run private daemons beside it)."""
    listening = {
        fields[6] for fields in (line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:])
        if len(fields) >= 8 and fields[7] == socket_path and fields[3] == "00010000"
    }
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "dockerd":
                continue
            if any(os.readlink(fd).removeprefix("socket:[").rstrip("]") in listening for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None
