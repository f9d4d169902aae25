"""The writable layer's bytes and inodes, measured in the background by one bounded worker.

Measuring a layer means walking its directory tree, which takes seconds for a container full of
small files, so it never happens on a request: a request gets the last figure, with the time it
was taken, and marks the container as wanted. One thread walks the wanted layers that are due
(never measured, or measured longer than `period` ago), pacing itself to `rate` directory
entries per second in all, so a node full of containers costs the shim a steady trickle and
dockerd nothing. (cri-dockerd ran a goroutine per container asking dockerd for `inspect
size=1`, a full walk of the layer inside dockerd, every minute.)

overlay2 layers are walked from the upper directory Docker reports in GraphDriver.Data; for
other storage drivers dockerd measures (`inspect size=1`), from the same worker at the same pace.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .errors import CRIError

log = logging.getLogger(__name__)

# Entries a Docker measurement is reckoned to cost, for the pace.
DOCKER_MEASUREMENT_COST = 1000
# How far (in seconds of work) the worker may run ahead of its rate after being idle.
BURST_SECONDS = 1.0
# Containers nobody asked about for this long are forgotten (at least 3 periods).
FORGET_AFTER_SECONDS = 600.0


@dataclass(frozen=True)
class LayerUsage:
    used_bytes: int
    inodes: int | None  # None when dockerd measured: it counts bytes only
    timestamp_ns: int  # wall-clock time of the measurement


class _Stopping(Exception):
    """The worker is being closed: abandon the walk in progress."""


class Pacer:
    """Holds a worker to `rate` units per second on average, after a burst of BURST_SECONDS."""

    def __init__(self, rate: float, sleep: Callable[[float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._sleep = sleep
        self._clock = clock
        self._paid_until = float("-inf")

    def take(self, units: int) -> None:
        now = self._clock()
        self._paid_until = max(self._paid_until, now - BURST_SECONDS) + units / self._rate
        if self._paid_until > now:
            self._sleep(self._paid_until - now)


def walk(root: str, pace: Callable[[int], None]) -> tuple[int, int]:
    """(bytes on disk, inodes) under `root`, as `du` counts: hard links once, symlinks not
    followed, other filesystems mounted inside not entered. `pace` is told each directory's size.

    Raises FileNotFoundError when `root` itself is gone (the container was removed).
    """
    top = os.lstat(root)
    used, inodes = top.st_blocks * 512, 1
    linked: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        directory = pending.pop()
        count = 0
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    count += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted while we looked
                        continue
                    if info.st_dev != top.st_dev:
                        continue
                    if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                        if (info.st_dev, info.st_ino) in linked:
                            continue
                        linked.add((info.st_dev, info.st_ino))
                    used += info.st_blocks * 512
                    inodes += 1
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            if directory == root:
                raise
        except PermissionError:
            log.debug("cannot read %s; its contents are not counted", directory)
        pace(count + 1)
    return used, inodes


class WritableLayers:
    """The cache of writable-layer figures and the one worker thread that refreshes it."""

    def __init__(
        self,
        period: float,
        rate: float,
        measure_by_docker: Callable[[str], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._period = period
        self._forget_after = max(FORGET_AFTER_SECONDS, 3 * period)
        self._measure_by_docker = measure_by_docker
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pacer = Pacer(rate, self._pause, clock)
        self._wanted: dict[str, tuple[str, float]] = {}  # id → (upper dir or "", last asked)
        # The wanted layers in the order they are due: never measured (first asked first), then
        # measured (id → when last measured or tried, longest ago first). Kept in that order as
        # they go, so picking the next is O(1).
        self._never_measured: OrderedDict[str, None] = OrderedDict()
        self._measured: OrderedDict[str, float] = OrderedDict()
        self._swept_at = clock()  # when layers nobody asks about were last looked for
        self._usage: dict[str, LayerUsage] = {}
        self._thread: threading.Thread | None = None

    def usage(self, container_id: str, upper_dir: str) -> LayerUsage | None:
        """The last figure for the container (None before the first), and keep it measured."""
        if self._period <= 0:
            return None
        with self._lock:
            known = container_id in self._wanted
            self._wanted[container_id] = (upper_dir, self._clock())
            if not known:
                self._never_measured[container_id] = None
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="writable-layers", daemon=True)
                self._thread.start()
            usage = self._usage.get(container_id)
        if not known:
            self._wake.set()
        return usage

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._wanted)

    # --- the worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            job, idle = self._next_job()
            if job is None:
                self._wake.wait(timeout=idle)
                self._wake.clear()
                continue
            container_id, upper_dir = job
            try:
                usage = self._measure(container_id, upper_dir)
            except _Stopping:
                return
            except FileNotFoundError:
                self._forget(container_id)  # removed
                continue
            except CRIError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    self._forget(container_id)
                    continue
                log.info("cannot measure the writable layer of %s: %s", container_id[:12], exc)
                usage = None
            except OSError as exc:
                log.info("cannot measure the writable layer of %s: %s", container_id[:12], exc)
                usage = None
            with self._lock:
                if container_id in self._wanted:
                    self._never_measured.pop(container_id, None)
                    self._measured.pop(container_id, None)
                    self._measured[container_id] = self._clock()  # measured last of all
                    if usage is not None:
                        self._usage[container_id] = usage

    def _next_job(self) -> tuple[tuple[str, str] | None, float]:
        """The wanted layer measured longest ago if it is due, else how long to sleep."""
        with self._lock:
            now = self._clock()
            if now - self._swept_at >= self._forget_after / 10:  # forgotten at most a tenth late
                self._swept_at = now
                for container_id in [key for key, (_, asked) in self._wanted.items()
                                     if now - asked > self._forget_after]:
                    self._drop(container_id)
            if self._never_measured:
                container_id = next(iter(self._never_measured))
            elif self._measured:
                container_id, measured_at = next(iter(self._measured.items()))
                due_at = measured_at + self._period
                if due_at > now:
                    return None, due_at - now
            else:
                return None, self._period
            return (container_id, self._wanted[container_id][0]), 0.0

    def _measure(self, container_id: str, upper_dir: str) -> LayerUsage:
        if upper_dir:
            used, inodes = walk(upper_dir, self._pacer.take)
            return LayerUsage(used, inodes, time.time_ns())
        self._pacer.take(DOCKER_MEASUREMENT_COST)
        return LayerUsage(self._measure_by_docker(container_id), None, time.time_ns())

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping()

    def _forget(self, container_id: str) -> None:
        with self._lock:
            self._drop(container_id)

    def _drop(self, container_id: str) -> None:
        self._wanted.pop(container_id, None)
        self._never_measured.pop(container_id, None)
        self._measured.pop(container_id, None)
        self._usage.pop(container_id, None)
