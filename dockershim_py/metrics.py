"""cAdvisor-style metrics for ListMetricDescriptors and ListPodSandboxMetrics: pure conversions.

With PodAndContainerStatsFromCRI the kubelet serves /metrics/cadvisor from these RPCs, so
they bring back the pod, namespace, container and image labels that cAdvisor's metrics lost
when dockershim went away (kubernetes#111077). Names, help and label keys follow cAdvisor's,
so dashboards keep working. Label keys are sorted, and every metric's values follow its
descriptor's keys, as the CRI asks.

CRI metric values are unsigned integers, so the `_seconds_total` counters count whole seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from .api import api_pb2 as api
from .cgroup_stats import CgroupSample, InterfaceCounters
from .writable_layer import LayerUsage

SECOND_NS = 1_000_000_000

# cAdvisor's labels: `id` is the cgroup path, `name` the Docker container name.
BASE_KEYS = ("container", "id", "image", "name", "namespace", "pod")
NETWORK_KEYS = ("container", "id", "image", "interface", "name", "namespace", "pod")
FS_KEYS = ("container", "device", "id", "image", "name", "namespace", "pod")


@dataclass(frozen=True)
class _Spec:
    name: str
    help: str
    type: int
    keys: tuple[str, ...]


def _seconds(nanoseconds: int | None) -> int | None:
    return None if nanoseconds is None else nanoseconds // SECOND_NS


# Metrics from one cgroup reading, and how each is taken from it.
_CGROUP: tuple[tuple[_Spec, Callable[[CgroupSample], int | None]], ...] = (
    (_Spec("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", api.COUNTER, BASE_KEYS),
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
)

_START_TIME = _Spec("container_start_time_seconds", "Start time of the container since unix epoch in seconds.",
                    api.GAUGE, BASE_KEYS)
_FS_USAGE = _Spec("container_fs_usage_bytes", "Number of bytes that are consumed by the container's writable layer.",
                  api.GAUGE, FS_KEYS)

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
    specs = [spec for spec, _ in _CGROUP] + [_START_TIME, _FS_USAGE] + [spec for spec, _ in _NETWORK]
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
    """CPU, memory and task metrics of one cgroup (a container's, or a pod's with container="")."""
    values = _values(labels, BASE_KEYS)
    for spec, take in _CGROUP:
        value = take(sample)
        if value is not None:
            _add(target, spec, values, value)


def add_start_time_metric(target: Target, labels: Mapping[str, str], started_at_ns: int) -> None:
    _add(target, _START_TIME, _values(labels, BASE_KEYS), started_at_ns // SECOND_NS)


def add_writable_layer_metric(target: Target, labels: Mapping[str, str], device: str, usage: LayerUsage) -> None:
    """The writable layer's bytes, stamped with when the background worker measured them."""
    _add(target, _FS_USAGE, _values({**labels, "device": device}, FS_KEYS), usage.used_bytes, usage.timestamp_ns)


def add_network_metrics(target: Target, labels: Mapping[str, str], interfaces: Mapping[str, InterfaceCounters]) -> None:
    """Counters of every interface of the pod's network namespace but loopback."""
    for interface, counters in sorted(interfaces.items()):
        if interface == "lo":
            continue
        values = _values({**labels, "interface": interface}, NETWORK_KEYS)
        for spec, take in _NETWORK:
            _add(target, spec, values, take(counters))
