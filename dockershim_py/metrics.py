"""cAdvisor-style metrics for ListMetricDescriptors and ListPodSandboxMetrics: pure conversions.

With PodAndContainerStatsFromCRI the kubelet serves /metrics/cadvisor from these RPCs, so
they bring back the pod, namespace, container and image labels that cAdvisor's metrics lost
when dockershim went away (kubernetes#111077). Names, help and label keys follow cAdvisor's,
so dashboards keep working. Label keys are sorted, and every metric's values follow its
descriptor's keys, as the CRI asks.

CRI metric values are unsigned integers, so the `_seconds_total` counters count whole seconds
and container_last_seen whole seconds since the epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from .api import api_pb2 as api
from .cgroup_stats import CgroupSample, DeviceIo, InterfaceCounters, Pressure, ProcessCounts
from .writable_layer import LayerUsage

SECOND_NS = 1_000_000_000

# cAdvisor's labels: `id` is the cgroup path, `name` the Docker container name.
BASE_KEYS = ("container", "id", "image", "name", "namespace", "pod")
# cAdvisor's CPU usage has `cpu="total"` (per-CPU series are off by default), and dashboards select on it.
CPU_KEYS = ("container", "cpu", "id", "image", "name", "namespace", "pod")
NETWORK_KEYS = ("container", "id", "image", "interface", "name", "namespace", "pod")
FS_KEYS = ("container", "device", "id", "image", "name", "namespace", "pod")
BLKIO_KEYS = ("container", "device", "id", "image", "major", "minor", "name", "namespace", "operation", "pod")
FAILURE_KEYS = ("container", "failure_type", "id", "image", "name", "namespace", "pod", "scope")


@dataclass(frozen=True)
class _Spec:
    name: str
    help: str
    type: int
    keys: tuple[str, ...]


def _seconds(nanoseconds: int | None) -> int | None:
    return None if nanoseconds is None else nanoseconds // SECOND_NS


def _stalled_seconds(pressure: Pressure | None, full: bool) -> int | None:
    stall = None if pressure is None else pressure.full if full else pressure.some
    return None if stall is None else stall.total_us // 1_000_000


def _pressure_specs() -> tuple[tuple[_Spec, Callable[[CgroupSample], int | None]], ...]:
    """cAdvisor's six PSI counters: `stalled` from the `full` line, `waiting` from `some`."""
    specs: list[tuple[_Spec, Callable[[CgroupSample], int | None]]] = []
    for resource, label, field in (("cpu", "CPU", "cpu_pressure"), ("memory", "memory", "memory_pressure"),
                                   ("io", "IO", "io_pressure")):
        for kind, full, meaning in (("stalled", True, "no tasks in the container could make progress"),
                                    ("waiting", False, "tasks in the container have waited")):
            spec = _Spec(f"container_pressure_{resource}_{kind}_seconds_total",
                         f"Total time duration {meaning} due to {label} congestion.", api.COUNTER, BASE_KEYS)

            def read(s: CgroupSample, field: str = field, full: bool = full) -> int | None:
                return _stalled_seconds(getattr(s, field), full)

            specs.append((spec, read))
    return tuple(specs)


# Metrics from one cgroup reading, and how each is taken from it.
_CGROUP: tuple[tuple[_Spec, Callable[[CgroupSample], int | None]], ...] = (
    (_Spec("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", api.COUNTER, CPU_KEYS),
     lambda s: _seconds(s.cpu_usage_ns)),
    (_Spec("container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", api.COUNTER, BASE_KEYS),
     lambda s: _seconds(s.cpu_user_ns)),
    (_Spec("container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", api.COUNTER,
           BASE_KEYS),
     lambda s: _seconds(s.cpu_system_ns)),
    (_Spec("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", api.COUNTER,
           BASE_KEYS),
     lambda s: s.cfs_periods),
    (_Spec("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", api.COUNTER,
           BASE_KEYS),
     lambda s: s.cfs_throttled_periods),
    (_Spec("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.",
           api.COUNTER, BASE_KEYS),
     lambda s: _seconds(s.cfs_throttled_ns)),
    (_Spec("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when "
           "it was accessed.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_usage),
    (_Spec("container_memory_working_set_bytes", "Current working set in bytes (usage minus inactive page cache).",
           api.GAUGE, BASE_KEYS),
     lambda s: s.memory_working_set),
    (_Spec("container_memory_rss", "Size of RSS in bytes: anonymous and swap cache memory.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_rss),
    (_Spec("container_memory_cache", "Number of bytes of page cache memory.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_cache),
    (_Spec("container_memory_mapped_file", "Size of memory mapped files in bytes.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_mapped_file),
    (_Spec("container_memory_swap", "Container swap usage in bytes.", api.GAUGE, BASE_KEYS),
     lambda s: s.swap_usage),
    (_Spec("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_max_usage),
    (_Spec("container_memory_failcnt", "Number of memory usage hits limits (cgroup v1 only).", api.COUNTER,
           BASE_KEYS),
     lambda s: s.memory_failcnt),
    (_Spec("container_oom_events_total", "Count of out of memory events observed for the container.", api.COUNTER,
           BASE_KEYS),
     lambda s: s.oom_kills),
    (_Spec("container_spec_memory_limit_bytes", "Memory limit for the container (0 when unlimited).", api.GAUGE,
           BASE_KEYS),
     lambda s: s.memory_limit or 0),
    (_Spec("container_threads", "Number of tasks (threads) in the container (the pids controller's count).",
           api.GAUGE, BASE_KEYS),
     lambda s: s.tasks),
    (_Spec("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value "
           "is zero.", api.GAUGE, BASE_KEYS),
     lambda s: s.pids_limit or 0),
    (_Spec("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_kernel),
    (_Spec("container_spec_cpu_period", "CPU period of the container (CFS period in microseconds).", api.GAUGE,
           BASE_KEYS),
     lambda s: s.cpu_period_us),
    (_Spec("container_spec_cpu_quota", "CPU quota of the container (CFS quota in microseconds per period).",
           api.GAUGE, BASE_KEYS),
     lambda s: s.cpu_quota_us),
    (_Spec("container_spec_cpu_shares", "CPU share of the container (cgroup v2 weight as shares).", api.GAUGE,
           BASE_KEYS),
     lambda s: s.cpu_shares),
    (_Spec("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container: memory plus swap "
           "(0 when unlimited).", api.GAUGE, BASE_KEYS),
     lambda s: s.memory_swap_limit or 0),
    *_pressure_specs(),
)

_FAILURES = _Spec("container_memory_failures_total", "Cumulative count of memory allocation failures (page "
                  "faults by failure_type, of the cgroup alone or its whole hierarchy by scope).", api.COUNTER,
                  FAILURE_KEYS)

_BLKIO = _Spec("container_blkio_device_usage_total", "Blkio device bytes usage.", api.COUNTER, BLKIO_KEYS)
# Per-device I/O counters from the same blkio figures: (spec, bytes or requests, operation).
_FS_IO: tuple[tuple[_Spec, bool, str], ...] = (
    (_Spec("container_fs_reads_bytes_total", "Cumulative count of bytes read.", api.COUNTER, FS_KEYS), True, "Read"),
    (_Spec("container_fs_reads_total", "Cumulative count of reads completed.", api.COUNTER, FS_KEYS), False, "Read"),
    (_Spec("container_fs_writes_bytes_total", "Cumulative count of bytes written.", api.COUNTER, FS_KEYS),
     True, "Write"),
    (_Spec("container_fs_writes_total", "Cumulative count of writes completed.", api.COUNTER, FS_KEYS),
     False, "Write"),
)

_START_TIME = _Spec("container_start_time_seconds", "Start time of the container since unix epoch in seconds.",
                    api.GAUGE, BASE_KEYS)
_LAST_SEEN = _Spec("container_last_seen", "Last time a container was seen by the exporter (when it was read).",
                   api.GAUGE, BASE_KEYS)
_FS_USAGE = _Spec("container_fs_usage_bytes", "Number of bytes that are consumed by the container's writable layer.",
                  api.GAUGE, FS_KEYS)
_FS_CAPACITY: tuple[tuple[_Spec, Callable[[os.statvfs_result], int]], ...] = (
    (_Spec("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.",
           api.GAUGE, FS_KEYS),
     lambda fs: fs.f_blocks * fs.f_frsize),
    (_Spec("container_fs_inodes_total", "Number of Inodes of the filesystem the writable layer is on.", api.GAUGE,
           FS_KEYS),
     lambda fs: fs.f_files),
    (_Spec("container_fs_inodes_free", "Number of available Inodes of the filesystem the writable layer is on.",
           api.GAUGE, FS_KEYS),
     lambda fs: fs.f_ffree),
)
_PROCESSES: tuple[tuple[_Spec, Callable[[ProcessCounts], int | None]], ...] = (
    (_Spec("container_processes", "Number of processes running inside the container.", api.GAUGE, BASE_KEYS),
     lambda p: p.processes),
    (_Spec("container_file_descriptors", "Number of open file descriptors for the container.", api.GAUGE,
           BASE_KEYS),
     lambda p: p.file_descriptors),
    (_Spec("container_sockets", "Number of open sockets for the container.", api.GAUGE, BASE_KEYS),
     lambda p: p.sockets),
)

_NETWORK: tuple[tuple[_Spec, Callable[[InterfaceCounters], int]], ...] = tuple(
    (_Spec(f"container_network_{name}", help_text, api.COUNTER, NETWORK_KEYS), field)
    for name, help_text, field in (
        ("receive_bytes_total", "Cumulative count of bytes received.", lambda c: c.rx_bytes),
        ("receive_packets_total", "Cumulative count of packets received.", lambda c: c.rx_packets),
        ("receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.",
         lambda c: c.rx_dropped),
        ("receive_errors_total", "Cumulative count of errors encountered while receiving.", lambda c: c.rx_errors),
        ("transmit_bytes_total", "Cumulative count of bytes transmitted.", lambda c: c.tx_bytes),
        ("transmit_packets_total", "Cumulative count of packets transmitted.", lambda c: c.tx_packets),
        ("transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.",
         lambda c: c.tx_dropped),
        ("transmit_errors_total", "Cumulative count of errors encountered while transmitting.",
         lambda c: c.tx_errors),
    )
)


def descriptors() -> list[api.MetricDescriptor]:
    """Every metric ListPodSandboxMetrics may send; the kubelet drops any other name."""
    specs = [
        *(spec for spec, _ in _CGROUP), _FAILURES, _BLKIO, *(spec for spec, _, _ in _FS_IO), _LAST_SEEN, _START_TIME,
        _FS_USAGE, *(spec for spec, _ in _FS_CAPACITY), *(spec for spec, _ in _PROCESSES),
        *(spec for spec, _ in _NETWORK),
    ]
    return [api.MetricDescriptor(name=spec.name, help=spec.help, label_keys=spec.keys) for spec in specs]


# Where metrics are added: the `metrics` field of a PodSandboxMetrics or ContainerMetrics.
# Adding in place costs half of building a Metric and copying it in, for thousands per scrape.
Target: TypeAlias = "RepeatedCompositeFieldContainer[api.Metric]"


def _add(target: Target, spec: _Spec, values: list[str], value: int, timestamp_ns: int = 0) -> None:
    """Add one metric; timestamp 0 means gathered now, as the CRI asks, else when it was cached."""
    metric = target.add(name=spec.name, timestamp=timestamp_ns, metric_type=spec.type, label_values=values)
    metric.value.value = max(value, 0)


def _values(labels: Mapping[str, str], keys: tuple[str, ...]) -> list[str]:
    return [labels[key] for key in keys]


def add_cgroup_metrics(target: Target, labels: Mapping[str, str], sample: CgroupSample) -> None:
    """CPU, memory, task and block I/O metrics of one cgroup (a container's, or a pod's with container="")."""
    values = {BASE_KEYS: _values(labels, BASE_KEYS), CPU_KEYS: _values({**labels, "cpu": "total"}, CPU_KEYS)}
    for spec, take in _CGROUP:
        value = take(sample)
        if value is not None:
            _add(target, spec, values[spec.keys], value)
    faults = (("pgfault", "container", sample.local_page_faults),
              ("pgmajfault", "container", sample.local_major_page_faults),
              ("pgfault", "hierarchy", sample.page_faults), ("pgmajfault", "hierarchy", sample.major_page_faults))
    for failure_type, scope, count in faults:
        if count is not None:
            _add(target, _FAILURES, _values({**labels, "failure_type": failure_type, "scope": scope}, FAILURE_KEYS),
                 count)
    for device in sample.block_io:
        _add_block_io(target, labels, device)


def _add_block_io(target: Target, labels: Mapping[str, str], device: DeviceIo) -> None:
    """One device's bytes by operation, and its reads and writes as the fs_ counters."""
    for operation, count in sorted(device.service_bytes.items()):
        blkio = {**labels, "device": device.device, "major": str(device.major), "minor": str(device.minor),
                 "operation": operation}
        _add(target, _BLKIO, _values(blkio, BLKIO_KEYS), count)
    values = _values({**labels, "device": device.device}, FS_KEYS)
    for spec, in_bytes, operation in _FS_IO:
        counts = device.service_bytes if in_bytes else device.serviced
        if operation in counts:
            _add(target, spec, values, counts[operation])


def add_last_seen_metric(target: Target, labels: Mapping[str, str], seen_ns: int) -> None:
    _add(target, _LAST_SEEN, _values(labels, BASE_KEYS), seen_ns // SECOND_NS)


def add_process_metrics(target: Target, labels: Mapping[str, str], counts: ProcessCounts) -> None:
    """Processes, descriptors and sockets; the last two are left out when there were too many to count."""
    values = _values(labels, BASE_KEYS)
    for spec, take in _PROCESSES:
        value = take(counts)
        if value is not None:
            _add(target, spec, values, value)


def add_start_time_metric(target: Target, labels: Mapping[str, str], started_at_ns: int) -> None:
    _add(target, _START_TIME, _values(labels, BASE_KEYS), started_at_ns // SECOND_NS)


def add_writable_layer_metric(target: Target, labels: Mapping[str, str], device: str, usage: LayerUsage) -> None:
    """The writable layer's bytes, stamped with when the background worker measured them."""
    _add(target, _FS_USAGE, _values({**labels, "device": device}, FS_KEYS), usage.used_bytes, usage.timestamp_ns)


def add_filesystem_metrics(target: Target, labels: Mapping[str, str], device: str, fs: os.statvfs_result) -> None:
    """Size and inodes of the filesystem writable layers are on (Docker's storage), as cAdvisor gives them."""
    values = _values({**labels, "device": device}, FS_KEYS)
    for spec, take in _FS_CAPACITY:
        _add(target, spec, values, take(fs))


def add_network_metrics(target: Target, labels: Mapping[str, str], interfaces: Mapping[str, InterfaceCounters]) -> None:
    """Counters of every interface of the pod's network namespace but loopback."""
    for interface, counters in sorted(interfaces.items()):
        if interface == "lo":
            continue
        values = _values({**labels, "interface": interface}, NETWORK_KEYS)
        for spec, take in _NETWORK:
            _add(target, spec, values, take(counters))
