"""Measuring helpers shared by the benchmarks: latency percentiles and process CPU and memory."""

from __future__ import annotations

import mmap
import os
import statistics
import time
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


def idle_memory_penalty(mib: int = 16, idle_seconds: float = 1.0) -> dict[str, float]:
    """Milliseconds to read back `mib` MiB this process holds (a byte a page): at once, and after
    `idle_seconds` untouched (medians of 3).

    Some VMs make memory left alone for a moment slow to touch again, with no page fault the guest
    sees; there everything that runs after an idle gap pays per page it touches, the client of a
    relist every second as much as the server, and figures from such a machine compare with no other.
    """
    size = mib << 20
    memory = mmap.mmap(-1, size)
    try:
        view = memoryview(memory)
        view[::mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)

        def read_back() -> float:
            started = time.perf_counter()
            bytes(view[::mmap.PAGESIZE])
            return (time.perf_counter() - started) * 1000

        read_back()
        at_once, after_idle = [], []
        for _ in range(3):
            at_once.append(read_back())
            time.sleep(idle_seconds)
            after_idle.append(read_back())
        view.release()
    finally:
        memory.close()
    return {"mib": mib, "idle_seconds": idle_seconds, "at_once_ms": statistics.median(at_once),
            "after_idle_ms": statistics.median(after_idle)}


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
