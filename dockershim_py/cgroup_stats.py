"""What the kernel says about a container: its cgroup's CPU, memory, block I/O and task figures,
its pressure stall information (PSI), its processes' open files, and the interface counters of
its pod's network namespace, read straight from the files.

cri-dockerd asked dockerd for a one-shot `docker stats` per container per request, which is
what drives dockerd to 200 % CPU on busy nodes (Mirantis/cri-dockerd#135). dockerd reads the
same files, so the shim reads them itself: a handful of small reads per container, no daemon.

Pure path rules and parsers first (unit-tested against fake cgroup trees), then the reader.
Both cgroup v1 (a hierarchy per controller) and v2 (one unified hierarchy), and both Docker
cgroup drivers (cgroupfs: `<parent>/<id>`; systemd: `docker-<id>.scope` inside a slice).
"""

from __future__ import annotations

import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias, TypeVar

_Parsed = TypeVar("_Parsed")

# cgroup v1 says "no limit" with a page-aligned int64 maximum; the kubelet treats anything
# above 2^62 as unlimited too.
UNLIMITED = 1 << 62
# The v1 controllers the figures come from (cpu and blkio for metrics only).
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
# Docker's cgroup parents when a container names none.
DOCKER_CGROUPFS_PARENT = "/docker"
DOCKER_SYSTEMD_PARENT = "system.slice"
# The interface the kubelet treats as the pod's own.
DEFAULT_INTERFACE = "eth0"


class CgroupGone(Exception):
    """The container's cgroup has disappeared: it stopped or was removed since it was listed."""


# --- where the hierarchies are mounted ---------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    point: str  # where the hierarchy is mounted in this mount namespace
    root: str  # which cgroup of the hierarchy sits at `point` ("/" unless in a cgroup namespace)

    def directory(self, cgroup: str) -> str | None:
        """The directory of hierarchy path `cgroup`; None when it lies outside this mount."""
        cgroup = "/" + cgroup.strip("/")
        root = "/" + self.root.strip("/")
        if root != "/":
            if cgroup != root and not cgroup.startswith(root + "/"):
                return None
            cgroup = cgroup[len(root):] or "/"
        return posixpath.join(self.point, cgroup.lstrip("/")).rstrip("/") or "/"


@dataclass(frozen=True)
class CgroupLayout:
    """The node's cgroup mounts: one unified hierarchy (v2), or one per v1 controller."""

    version: int
    mounts: Mapping[str, Mount]  # v1: controller → mount; v2: "" → the unified mount
    # v1 only: the controller-less cgroup2 of a hybrid host. It has no figures, but every cgroup
    # there has its pressure files, and runc and systemd place containers in it too.
    hybrid_unified: Mount | None = None


def parse_mountinfo(text: str) -> CgroupLayout:
    """The cgroup layout from /proc/self/mountinfo.

    A hybrid host (v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified, like this
    project's test host) counts as v1: that is where Docker puts the controllers. Its cgroup2
    is kept for the pressure files.
    """
    v1: dict[str, Mount] = {}
    unified: Mount | None = None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if len(fields) < separator + 4 or len(fields) < 5:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup2" and unified is None:
            unified = Mount(point, root)
        elif fstype == "cgroup":
            for controller in V1_CONTROLLERS:
                if controller in options and controller not in v1:
                    v1[controller] = Mount(point, root)
    if "memory" in v1 or "cpuacct" in v1:
        return CgroupLayout(1, v1, unified)
    if unified is not None:
        return CgroupLayout(2, {"": unified})
    raise ValueError("no cgroup v1 memory/cpuacct hierarchy and no cgroup2 mount in mountinfo")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for escape, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escape, char)
    return field


# --- which cgroup a container is in --------------------------------------------------------------


def expand_slice(name: str) -> str:
    """The path of systemd slice `name`: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`."""
    if name == "-.slice":
        return "/"
    stem = name.removesuffix(".slice")
    if stem == name or not stem or "/" in name or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ValueError(f"{name!r} is not a systemd slice name")
    parts = stem.split("-")
    return "".join(f"/{'-'.join(parts[:depth])}.slice" for depth in range(1, len(parts) + 1))


def container_cgroup(container_id: str, cgroup_parent: str, driver: str) -> str:
    """The hierarchy path Docker gives a container with `cgroup_parent` under `driver`.

    Raises ValueError for a parent the systemd driver would not accept (not a slice name).
    """
    if driver == "systemd":
        return posixpath.join(expand_slice(cgroup_parent or DOCKER_SYSTEMD_PARENT), f"docker-{container_id}.scope")
    parent = "/" + (cgroup_parent or DOCKER_CGROUPFS_PARENT).strip("/")
    return posixpath.join(parent, container_id)


def pod_cgroup(cgroup_parent: str, driver: str) -> str | None:
    """The pod-level cgroup every container of the pod sits under; None without a parent.

    Without a parent the pause container and the pod's containers sit beside every other
    container under Docker's default parent, so there is no pod-level cgroup to read.
    """
    if not cgroup_parent:
        return None
    if driver == "systemd":
        return expand_slice(cgroup_parent)
    return "/" + cgroup_parent.strip("/")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller → hierarchy path from /proc/<pid>/cgroup; the v2 hierarchy is under ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths.setdefault("", path)
        for controller in controllers.split(","):
            if controller:
                paths.setdefault(controller, path)
    return paths


@dataclass(frozen=True)
class CgroupDirs:
    """The directories holding one cgroup's files: the same one for v2, one per v1 controller."""

    version: int
    cpu: str | None
    cpuacct: str | None
    memory: str | None
    pids: str | None
    blkio: str | None = None
    pressure: str | None = None  # where cpu.pressure, memory.pressure and io.pressure are


def cgroup_dirs(layout: CgroupLayout, paths: Mapping[str, str]) -> CgroupDirs:
    """Directories for hierarchy paths per controller ("" for v2), as parse_proc_cgroup gives."""
    if layout.version == 2:
        unified = layout.mounts[""].directory(paths[""]) if "" in paths else None
        return CgroupDirs(2, unified, unified, unified, unified, unified, unified)

    def directory(controller: str) -> str | None:
        mount = layout.mounts.get(controller)
        path = paths.get(controller)
        return mount.directory(path) if mount is not None and path is not None else None

    hybrid = layout.hybrid_unified
    pressure = hybrid.directory(paths[""]) if hybrid is not None and "" in paths else None
    return CgroupDirs(1, directory("cpu"), directory("cpuacct"), directory("memory"), directory("pids"),
                      directory("blkio"), pressure)


def same_path(layout: CgroupLayout, cgroup: str) -> dict[str, str]:
    """Every hierarchy at path `cgroup`, which is how Docker places containers and pods."""
    if layout.version == 2:
        return {"": cgroup}
    paths = {controller: cgroup for controller in layout.mounts}
    if layout.hybrid_unified is not None:
        paths[""] = cgroup
    return paths


# --- parsers --------------------------------------------------------------------------------------


def parse_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, memory.oom_control).

    Read on every request for every container: the well-formed case takes one split.
    """
    fields = text.split()
    if len(fields) % 2 == 0 and len(fields) == 2 * text.count("\n"):
        try:
            return dict(zip(fields[::2], map(int, fields[1::2])))
        except ValueError:
            pass
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def parse_int(text: str) -> int:
    return int(text.strip())


def parse_limit(text: str) -> int | None:
    """A memory or swap limit; None when there is none ("max" in v2, about 2^63 in v1)."""
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= UNLIMITED else value


def cpu_max_period(text: str) -> int:
    """The CFS period (µs) from v2 cpu.max, `<quota|max> <period>`."""
    _, period = text.split()
    return int(period)


def cpu_max_quota(text: str) -> int | None:
    """The CFS quota (µs) from v2 cpu.max; None when there is none (`max`)."""
    quota, _ = text.split()
    return None if quota == "max" else int(quota)


def cfs_quota(text: str) -> int | None:
    """v1 cpu.cfs_quota_us; None when there is none (-1)."""
    quota = int(text)
    return None if quota < 0 else quota


def cpu_weight_to_shares(weight: int) -> int:
    """v2 cpu.weight (1-10000) as v1 cpu.shares (2-262144): the inverse of runc's mapping, as cAdvisor does."""
    return 2 + (weight - 1) * 262142 // 9999


class Stall(NamedTuple):  # tuples: thousands are made a request
    """One line of a pressure file: the share of time (%) tasks stalled over 10, 60 and 300 s,
    and the total stalled time in microseconds."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


class Pressure(NamedTuple):
    """A resource's pressure: `some` (at least one task stalled) and `full` (all of them at once).

    CPU has no `full` line before Linux 5.13.
    """

    some: Stall | None
    full: Stall | None


# The kernel's layout since PSI came (Linux 4.20); a later field after `total` would be passed over.
_DECIMAL = r"(\d+(?:\.\d+)?)"
_PRESSURE_LINE = re.compile(rf"^(some|full) avg10={_DECIMAL} avg60={_DECIMAL} avg300={_DECIMAL} total=(\d+)\b",
                            re.MULTILINE)


def parse_pressure(text: str) -> Pressure | None:
    """cpu.pressure, memory.pressure or io.pressure (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`).

    A line that does not parse is passed over (PSI is an extra: it never costs a container its
    other figures); None when no line does. One regular expression: it is read for every
    container on every stats request.
    """
    stalls = {kind: Stall(float(avg10), float(avg60), float(avg300), int(total))
              for kind, avg10, avg60, avg300, total in _PRESSURE_LINE.findall(text)}
    if not stalls:
        return None
    return Pressure(stalls.get("some"), stalls.get("full"))


Device: TypeAlias = tuple[int, int]  # (major, minor)


@dataclass(frozen=True)
class DeviceIo:
    """A cgroup's I/O on one block device: bytes and requests by operation ("Read", "Write", ...)."""

    major: int
    minor: int
    device: str  # /dev/<name>, "" when sysfs does not name it
    service_bytes: Mapping[str, int]
    serviced: Mapping[str, int]


def parse_blkio_v1(text: str) -> dict[Device, dict[str, int]]:
    """Device → operation → count from blkio.throttle.io_service_bytes or io_serviced (`8:0 Read 4096`).

    The per-device lines only: the closing `Total` line sums them.
    """
    devices: dict[Device, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        major, colon, minor = parts[0].partition(":")
        if colon and major.isdigit() and minor.isdigit():
            devices.setdefault((int(major), int(minor)), {})[parts[1]] = int(parts[2])
    return devices


# v2 io.stat keys as v1's operations: (bytes or requests, operation).
_IO_STAT_KEYS = {
    "rbytes": (True, "Read"), "wbytes": (True, "Write"), "dbytes": (True, "Discard"),
    "rios": (False, "Read"), "wios": (False, "Write"), "dios": (False, "Discard"),
}


def parse_io_stat(text: str) -> tuple[dict[Device, dict[str, int]], dict[Device, dict[str, int]]]:
    """(bytes, requests), each device → operation → count, from v2 io.stat (`8:0 rbytes=4096 wbytes=0 ...`)."""
    service_bytes: dict[Device, dict[str, int]] = {}
    serviced: dict[Device, dict[str, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        major, colon, minor = fields[0].partition(":")
        if not (colon and major.isdigit() and minor.isdigit()):
            continue
        device = (int(major), int(minor))
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key in _IO_STAT_KEYS and value.isdigit():
                in_bytes, operation = _IO_STAT_KEYS[key]
                (service_bytes if in_bytes else serviced).setdefault(device, {})[operation] = int(value)
    return service_bytes, serviced


def _unnamed(major: int, minor: int) -> str:
    return ""


def block_io(service_bytes: Mapping[Device, Mapping[str, int]], serviced: Mapping[Device, Mapping[str, int]],
             device_name: Callable[[int, int], str]) -> tuple[DeviceIo, ...]:
    """Every device either file names, in device order."""
    return tuple(
        DeviceIo(major, minor, device_name(major, minor), service_bytes.get((major, minor), {}),
                 serviced.get((major, minor), {}))
        for major, minor in sorted(service_bytes.keys() | serviced.keys())
    )


@dataclass(frozen=True)
class CgroupSample:
    """One reading of a cgroup; None where the kernel or the configuration does not tell."""

    cpu_usage_ns: int
    memory_usage: int
    memory_working_set: int
    memory_rss: int
    page_faults: int
    major_page_faults: int
    memory_limit: int | None = None
    swap_usage: int | None = None
    swap_limit: int | None = None
    tasks: int | None = None
    # Shown by metrics (ListPodSandboxMetrics) only; some come from files only metrics read.
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_max_usage: int | None = None
    memory_failcnt: int | None = None
    oom_kills: int | None = None
    memory_kernel: int | None = None
    # Page faults of the cgroup's own processes, without its children's; on v2, which counts
    # the whole hierarchy only, the same as page_faults (as cAdvisor has it).
    local_page_faults: int | None = None
    local_major_page_faults: int | None = None
    memory_swap_limit: int | None = None  # memory plus swap, as Docker's MemorySwap; None when unlimited
    cpu_period_us: int | None = None
    cpu_quota_us: int | None = None  # None when there is no quota
    cpu_shares: int | None = None
    pids_limit: int | None = None  # None when unlimited
    block_io: tuple[DeviceIo, ...] = ()
    # None where the kernel keeps no PSI (disabled, or a v1 host without cgroup2).
    cpu_pressure: Pressure | None = None
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None

    @property
    def memory_available(self) -> int | None:
        """The limit minus the working set, as the kubelet defines it; None without a limit."""
        if self.memory_limit is None:
            return None
        return max(self.memory_limit - self.memory_working_set, 0)

    @property
    def swap_available(self) -> int | None:
        if self.swap_limit is None or self.swap_usage is None:
            return None
        return max(self.swap_limit - self.swap_usage, 0)


def working_set(usage: int, inactive_file: int) -> int:
    """Usage minus the inactive page cache: what the kubelet evicts on (cAdvisor's definition).

    cri-dockerd reported the raw usage, page cache included, so a pod that merely read big
    files looked close to its limit.
    """
    return max(usage - inactive_file, 0)


def _optional(files: Mapping[str, str], name: str, parse: Callable[[str], _Parsed]) -> _Parsed | None:
    text = files.get(name)
    return None if text is None else parse(text)


def sample_v1(files: Mapping[str, str], clock_ticks: int,
              device_name: Callable[[int, int], str] = _unnamed) -> CgroupSample:
    """A sample from cgroup v1 file contents by file name (cpuacct.usage, memory.stat, ...).

    Figures come from the hierarchical `total_*` lines (and `_recursive` files), so a pod
    cgroup counts its containers. Optional files that were not read (or do not exist) leave
    their fields None.
    """
    stat = parse_keyed(files["memory.stat"])
    usage = parse_int(files["memory.usage_in_bytes"])
    limit = _optional(files, "memory.limit_in_bytes", parse_limit)
    swap_usage = swap_limit = None
    memsw_limit = _optional(files, "memory.memsw.limit_in_bytes", parse_limit)
    if "memory.memsw.usage_in_bytes" in files:  # only with swap accounting (swapaccount=1)
        swap_usage = max(parse_int(files["memory.memsw.usage_in_bytes"]) - usage, 0)
        if memsw_limit is not None and limit is not None:
            swap_limit = max(memsw_limit - limit, 0)
    cpuacct = parse_keyed(files.get("cpuacct.stat", ""))
    throttling = parse_keyed(files.get("cpu.stat", ""))
    ticks_ns = 1_000_000_000 // clock_ticks
    return CgroupSample(
        cpu_usage_ns=parse_int(files["cpuacct.usage"]),
        memory_usage=usage,
        memory_working_set=working_set(usage, stat.get("total_inactive_file", 0)),
        memory_rss=stat.get("total_rss", 0),
        page_faults=stat.get("total_pgfault", 0),
        major_page_faults=stat.get("total_pgmajfault", 0),
        memory_limit=limit,
        swap_usage=swap_usage,
        swap_limit=swap_limit,
        tasks=_optional(files, "pids.current", parse_int),
        cpu_user_ns=cpuacct["user"] * ticks_ns if "user" in cpuacct else None,
        cpu_system_ns=cpuacct["system"] * ticks_ns if "system" in cpuacct else None,
        cfs_periods=throttling.get("nr_periods"),
        cfs_throttled_periods=throttling.get("nr_throttled"),
        cfs_throttled_ns=throttling.get("throttled_time"),
        memory_cache=stat.get("total_cache"),
        memory_mapped_file=stat.get("total_mapped_file"),
        memory_max_usage=_optional(files, "memory.max_usage_in_bytes", parse_int),
        memory_failcnt=_optional(files, "memory.failcnt", parse_int),
        oom_kills=parse_keyed(files.get("memory.oom_control", "")).get("oom_kill"),
        memory_kernel=_optional(files, "memory.kmem.usage_in_bytes", parse_int),
        local_page_faults=stat.get("pgfault"),
        local_major_page_faults=stat.get("pgmajfault"),
        memory_swap_limit=memsw_limit,
        cpu_period_us=_optional(files, "cpu.cfs_period_us", parse_int),
        cpu_quota_us=_optional(files, "cpu.cfs_quota_us", cfs_quota),
        cpu_shares=_optional(files, "cpu.shares", parse_int),
        pids_limit=_optional(files, "pids.max", parse_limit),
        block_io=block_io(parse_blkio_v1(files.get("blkio.throttle.io_service_bytes_recursive", "")),
                          parse_blkio_v1(files.get("blkio.throttle.io_serviced_recursive", "")), device_name),
        cpu_pressure=_optional(files, "cpu.pressure", parse_pressure),
        memory_pressure=_optional(files, "memory.pressure", parse_pressure),
        io_pressure=_optional(files, "io.pressure", parse_pressure),
    )


def sample_v2(files: Mapping[str, str], device_name: Callable[[int, int], str] = _unnamed) -> CgroupSample:
    """A sample from cgroup v2 file contents by file name (cpu.stat, memory.current, ...)."""
    cpu = parse_keyed(files["cpu.stat"])
    stat = parse_keyed(files["memory.stat"])
    usage = parse_int(files["memory.current"])
    limit = _optional(files, "memory.max", parse_limit)
    swap_limit = _optional(files, "memory.swap.max", parse_limit)
    weight = _optional(files, "cpu.weight", parse_int)

    def nanoseconds(key: str) -> int | None:
        return cpu[key] * 1000 if key in cpu else None

    return CgroupSample(
        cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
        memory_usage=usage,
        memory_working_set=working_set(usage, stat.get("inactive_file", 0)),
        memory_rss=stat.get("anon", 0),
        page_faults=stat.get("pgfault", 0),
        major_page_faults=stat.get("pgmajfault", 0),
        memory_limit=limit,
        swap_usage=_optional(files, "memory.swap.current", parse_int),
        swap_limit=swap_limit,
        tasks=_optional(files, "pids.current", parse_int),
        cpu_user_ns=nanoseconds("user_usec"),
        cpu_system_ns=nanoseconds("system_usec"),
        cfs_periods=cpu.get("nr_periods"),
        cfs_throttled_periods=cpu.get("nr_throttled"),
        cfs_throttled_ns=nanoseconds("throttled_usec"),
        memory_cache=stat.get("file"),
        memory_mapped_file=stat.get("file_mapped"),
        memory_max_usage=_optional(files, "memory.peak", parse_int),
        oom_kills=parse_keyed(files.get("memory.events", "")).get("oom_kill"),
        memory_kernel=stat.get("kernel"),  # Linux 5.18 and later
        local_page_faults=stat.get("pgfault"),
        local_major_page_faults=stat.get("pgmajfault"),
        # v2 limits swap alone: add the memory limit to give what v1 and Docker call the swap limit.
        memory_swap_limit=swap_limit + limit if swap_limit is not None and limit is not None else None,
        cpu_period_us=_optional(files, "cpu.max", cpu_max_period),
        cpu_quota_us=_optional(files, "cpu.max", cpu_max_quota),
        cpu_shares=None if weight is None else cpu_weight_to_shares(weight),
        pids_limit=_optional(files, "pids.max", parse_limit),
        block_io=block_io(*parse_io_stat(files.get("io.stat", "")), device_name),
        cpu_pressure=_optional(files, "cpu.pressure", parse_pressure),
        memory_pressure=_optional(files, "memory.pressure", parse_pressure),
        io_pressure=_optional(files, "io.pressure", parse_pressure),
    )


def combined(samples: Iterable[CgroupSample]) -> CgroupSample | None:
    """The pod-level figures of a pod without a pod cgroup: the sum over its containers.

    The sum has no limit (each container may have its own), so no available bytes either.
    """
    samples = list(samples)
    if not samples:
        return None
    tasks = [sample.tasks for sample in samples if sample.tasks is not None]
    return CgroupSample(
        cpu_usage_ns=sum(sample.cpu_usage_ns for sample in samples),
        memory_usage=sum(sample.memory_usage for sample in samples),
        memory_working_set=sum(sample.memory_working_set for sample in samples),
        memory_rss=sum(sample.memory_rss for sample in samples),
        page_faults=sum(sample.page_faults for sample in samples),
        major_page_faults=sum(sample.major_page_faults for sample in samples),
        tasks=sum(tasks) if tasks else None,
    )


def parse_device_name(uevent: str) -> str:
    """/dev/<DEVNAME> from a block device's sysfs uevent file; "" without one."""
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return f"/dev/{value}"
    return ""


# --- processes and their open files ----------------------------------------------------------------

# Descriptors counted per cgroup at most (a readlink each): past it the counts are left out,
# not understated, so a container holding a million sockets cannot stall a metrics request.
MAX_OPEN_FILES_COUNTED = 10_000


@dataclass(frozen=True)
class ProcessCounts:
    """A cgroup's processes and their open files, as cAdvisor counts them."""

    processes: int
    file_descriptors: int | None  # None past MAX_OPEN_FILES_COUNTED
    sockets: int | None


def parse_pids(text: str) -> list[int]:
    """The pids in cgroup.procs, one a line."""
    return [int(line) for line in text.split()]


def count_open_files(proc_root: str, pids: Iterable[int], limit: int) -> tuple[int, int] | None:
    """(descriptors, sockets) the processes hold, from /proc/<pid>/fd; None past `limit` descriptors.

    Processes that exit and descriptors closed while they are counted are left out.
    """
    descriptors = sockets = 0
    for pid in pids:
        try:
            with os.scandir(f"{proc_root}/{pid}/fd") as entries:
                for entry in entries:
                    try:
                        target = os.readlink(entry.path)
                    except OSError:  # closed meanwhile
                        continue
                    descriptors += 1
                    if descriptors > limit:
                        return None
                    if target.startswith("socket:"):
                        sockets += 1
        except OSError:  # exited, or not ours to look into
            continue
    return descriptors, sockets


# --- the reader -----------------------------------------------------------------------------------

# (controller, file, required): what the CRI stats need.
_V1_FILES = (
    ("cpuacct", "cpuacct.usage", True),
    ("memory", "memory.usage_in_bytes", True),
    ("memory", "memory.stat", True),
    ("memory", "memory.limit_in_bytes", False),
    ("memory", "memory.memsw.usage_in_bytes", False),
    ("memory", "memory.memsw.limit_in_bytes", False),
    ("pids", "pids.current", False),
)
# What metrics add.
_V1_DETAIL = (
    ("cpuacct", "cpuacct.stat", False),
    ("cpu", "cpu.stat", False),
    ("cpu", "cpu.cfs_period_us", False),
    ("cpu", "cpu.cfs_quota_us", False),
    ("cpu", "cpu.shares", False),
    ("memory", "memory.max_usage_in_bytes", False),
    ("memory", "memory.failcnt", False),
    ("memory", "memory.oom_control", False),
    ("memory", "memory.kmem.usage_in_bytes", False),
    ("pids", "pids.max", False),
    ("blkio", "blkio.throttle.io_service_bytes_recursive", False),
    ("blkio", "blkio.throttle.io_serviced_recursive", False),
)
_V2_FILES = (
    ("cpu.stat", True),
    ("memory.current", True),
    ("memory.stat", True),
    ("memory.max", False),
    ("memory.swap.current", False),
    ("memory.swap.max", False),
    ("pids.current", False),
)
_V2_DETAIL = (
    ("memory.events", False),
    ("memory.peak", False),
    ("cpu.max", False),
    ("cpu.weight", False),
    ("pids.max", False),
    ("io.stat", False),
)

# Files of cgroup2's core, in every cgroup when the kernel keeps PSI, whichever controllers it has.
_PRESSURE_FILES = ("cpu.pressure", "memory.pressure", "io.pressure")


def read_kernel_file(path: str) -> str:
    """A small kernel file, without Python's buffered text layer (which triples the cost)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", "replace")
    finally:
        os.close(fd)


class CgroupReader:
    """Finds containers' cgroups under the node's layout and reads them."""

    def __init__(self, layout: CgroupLayout, proc_root: str = "/proc", sys_root: str = "/sys") -> None:
        self.layout = layout
        self._proc = proc_root
        self._sys = sys_root
        self._clock_ticks = os.sysconf("SC_CLK_TCK")
        self._device_names: dict[Device, str] = {}

    @classmethod
    def for_this_host(cls) -> CgroupReader:
        return cls(parse_mountinfo(read_kernel_file("/proc/self/mountinfo")))

    def locate(self, container_id: str, cgroup_parent: str, driver: str, pid: int) -> tuple[str, CgroupDirs] | None:
        """(hierarchy path, directories) of a running container's cgroup; None when not found.

        The path follows from Docker's cgroup parent and driver; when that directory is not
        there (dockerd runs with its own --cgroup-parent, or in another cgroup namespace),
        the container's init process says where it is.
        """
        try:
            path = container_cgroup(container_id, cgroup_parent, driver)
        except ValueError:
            path = ""
        if path:
            dirs = cgroup_dirs(self.layout, same_path(self.layout, path))
            if dirs.memory is not None and os.path.isdir(dirs.memory):
                return path, dirs
        if pid <= 0:
            return None
        try:
            paths = parse_proc_cgroup(read_kernel_file(f"{self._proc}/{pid}/cgroup"))
        except OSError:
            return None
        dirs = cgroup_dirs(self.layout, paths)
        if dirs.memory is None or not os.path.isdir(dirs.memory):
            return None
        return paths.get("" if self.layout.version == 2 else "memory", ""), dirs

    def locate_pod(self, cgroup_parent: str, driver: str) -> tuple[str, CgroupDirs] | None:
        """(hierarchy path, directories) of the pod-level cgroup, when the pod has one."""
        try:
            path = pod_cgroup(cgroup_parent, driver)
        except ValueError:
            return None
        if path is None:
            return None
        dirs = cgroup_dirs(self.layout, same_path(self.layout, path))
        if dirs.memory is None or not os.path.isdir(dirs.memory):
            return None
        return path, dirs

    def read(self, dirs: CgroupDirs, detailed: bool = False) -> CgroupSample:
        """Read one cgroup; `detailed` adds what only metrics show. Raises CgroupGone."""
        files: dict[str, str] = {}
        for name in _PRESSURE_FILES:
            self._read_into(files, dirs.pressure, name, False)
        try:
            if dirs.version == 2:
                for name, required in _V2_FILES + (_V2_DETAIL if detailed else ()):
                    self._read_into(files, dirs.memory, name, required)
                return sample_v2(files, self._device_name)
            for controller, name, required in _V1_FILES + (_V1_DETAIL if detailed else ()):
                self._read_into(files, getattr(dirs, controller), name, required)
            return sample_v1(files, self._clock_ticks, self._device_name)
        except ValueError as exc:  # a file cut short by the cgroup going away mid-read
            raise CgroupGone(f"unreadable cgroup file: {exc}") from exc

    def processes(self, dirs: CgroupDirs) -> ProcessCounts:
        """The processes in the cgroup itself (not its children) and their open files. Raises CgroupGone.

        Every hierarchy holds the same processes; the memory one is always there.
        """
        try:
            pids = parse_pids(read_kernel_file(f"{dirs.memory}/cgroup.procs"))
        except (OSError, ValueError) as exc:
            raise CgroupGone(f"{dirs.memory}: {exc}") from exc
        counted = count_open_files(self._proc, pids, MAX_OPEN_FILES_COUNTED)
        if counted is None:
            return ProcessCounts(len(pids), None, None)
        return ProcessCounts(len(pids), *counted)

    def _device_name(self, major: int, minor: int) -> str:
        """/dev/<name> of a block device, as cAdvisor's `device` label; "" when sysfs does not say.

        Names are kept: a request may name the same few devices for every container.
        """
        name = self._device_names.get((major, minor))
        if name is None:
            try:
                uevent = read_kernel_file(f"{self._sys}/dev/block/{major}:{minor}/uevent")
            except OSError:
                return ""
            name = parse_device_name(uevent)
            self._device_names[(major, minor)] = name
        return name

    @staticmethod
    def _read_into(files: dict[str, str], directory: str | None, name: str, required: bool) -> None:
        if directory is None:
            if required:
                raise CgroupGone(f"no hierarchy for {name}")
            return
        try:
            files[name] = read_kernel_file(f"{directory}/{name}")
        except OSError as exc:  # absent, or ENODEV from a cgroup being removed
            if required:
                raise CgroupGone(f"{directory}: {exc}") from exc


# --- CPU rate -------------------------------------------------------------------------------------


class CpuRates:
    """usage_nano_cores from two samples of cumulative CPU time, kept between calls.

    A rate needs a window of at least `min_window_ns`: callers closer together than that
    (the eviction manager, a metrics scrape and crictl at once) get the last rate instead
    of a noisy one over a few milliseconds. The first sample of a container has no rate.
    """

    def __init__(self, min_window_ns: int = 1_000_000_000, forget_after_ns: int = 600_000_000_000) -> None:
        self._min_window = min_window_ns
        self._forget_after = forget_after_ns
        self._lock = threading.Lock()
        # key → (reference time, reference usage, last rate, last seen)
        self._samples: dict[str, tuple[int, int, int | None, int]] = {}
        self._pruned_at = 0

    def rate(self, key: str, usage_ns: int, at_ns: int) -> int | None:
        """The rate over the window ending at `at_ns` (a monotonic time), in nanocores."""
        with self._lock:
            self._prune(at_ns)
            previous = self._samples.get(key)
            if previous is None or usage_ns < previous[1] or at_ns < previous[0]:
                self._samples[key] = (at_ns, usage_ns, None, at_ns)  # new, or its counter restarted
                return None
            since, used, last_rate, _ = previous
            if at_ns - since < self._min_window:
                self._samples[key] = (since, used, last_rate, at_ns)
                return last_rate
            rate = (usage_ns - used) * 1_000_000_000 // (at_ns - since)
            self._samples[key] = (at_ns, usage_ns, rate, at_ns)
            return rate

    def _prune(self, now_ns: int) -> None:
        """Drop containers not asked about for a while, so churn does not grow the table."""
        if now_ns - self._pruned_at < self._forget_after // 10:
            return
        self._pruned_at = now_ns
        for key in [key for key, sample in self._samples.items() if now_ns - sample[3] > self._forget_after]:
            del self._samples[key]

    def __len__(self) -> int:
        return len(self._samples)


# --- network namespace counters ----------------------------------------------------------------


@dataclass(frozen=True)
class InterfaceCounters:
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> dict[str, InterfaceCounters]:
    """Interface → counters from /proc/<pid>/net/dev (the network namespace of that process)."""
    interfaces: dict[str, InterfaceCounters] = {}
    for line in text.splitlines():
        name, colon, numbers = line.partition(":")
        if not colon or "|" in line:
            continue
        values = numbers.split()
        if len(values) < 16 or not all(value.isdigit() for value in values[:16]):
            continue
        v = [int(value) for value in values[:16]]
        interfaces[name.strip()] = InterfaceCounters(
            rx_bytes=v[0], rx_packets=v[1], rx_errors=v[2], rx_dropped=v[3],
            tx_bytes=v[8], tx_packets=v[9], tx_errors=v[10], tx_dropped=v[11],
        )
    return interfaces


def parse_start_time(proc_stat: str) -> int:
    """Field 22 of /proc/<pid>/stat, the process's start in clock ticks since boot.

    With the pid it names one process for good: a pid reused by another process has another
    start time, so a cached pause-container pid is never mistaken for a stranger.
    """
    after_name = proc_stat[proc_stat.rindex(")") + 2:].split()
    return int(after_name[19])


class ProcessFiles:
    """Reads a process's view of its network namespace, checking it is the process meant."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc = proc_root

    def start_time(self, pid: int) -> int | None:
        try:
            return parse_start_time(read_kernel_file(f"{self._proc}/{pid}/stat"))
        except (OSError, ValueError, IndexError):
            return None

    def net_dev(self, pid: int, start_time: int | None) -> dict[str, InterfaceCounters] | None:
        """The counters of `pid`'s network namespace; None when that process is gone."""
        try:
            text = read_kernel_file(f"{self._proc}/{pid}/net/dev")
        except OSError:
            return None
        if start_time is not None and self.start_time(pid) != start_time:
            return None
        return parse_net_dev(text)
