"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats, ListMetricDescriptors
and ListPodSandboxMetrics.

The figures come from the cgroup files and the pods' network namespaces (cgroup_stats) and,
for writable layers, from a background worker (writable_layer); never from `docker stats`, the
one call per container per request that drives dockerd to 200 % CPU under cri-dockerd at about
200 containers (Mirantis/cri-dockerd#135). A request costs one Docker list call and a few small
file reads per running container; ListPodSandboxMetrics adds a look at each container's open
descriptors (bounded) and one statvfs. What only an inspect tells (cgroup parent, init pid, the
layer's directory) is asked once per container and kept until Docker lists it in another state.

Pure conversions (Docker list entries and cgroup readings to CRI) at the top; the service below.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from . import labels, metrics, naming
from .api import api_pb2 as api
from .cgroup_stats import (
    DEFAULT_INTERFACE,
    CgroupDirs,
    CgroupGone,
    CgroupReader,
    CgroupSample,
    CpuRates,
    InterfaceCounters,
    Pressure,
    ProcessFiles,
    combined,
)
from .config import Config
from .docker_client import DockerClient
from .docker_storage import filesystem_of, layers_mountpoint
from .errors import CRIError, failed_precondition, invalid_argument, not_found
from .events import ConvertedEntries
from .timestamps import parse_docker_time
from .writable_layer import LayerUsage, WritableLayers, walk

log = logging.getLogger(__name__)

# Docker states in which a container has a cgroup to read.
LIVE_STATES = ("running", "paused")
# Inspects of containers seen for the first time, run side by side.
PARALLEL_INSPECTS = 8
# What inspect told about containers not listed for this long is forgotten.
FORGET_AFTER_SECONDS = 600.0
# A cgroup reading answers every caller within this window: the kubelet asks ListContainerStats
# and ListPodSandboxStats back to back, and a CPU rate needs a longer window than this anyway.
READING_REUSE_NS = 1_000_000_000
# Directory entries one ListPodSandboxMetrics may walk itself, in all, for writable layers the
# background worker has not measured yet: a new container's layer holds a handful, and cAdvisor
# gave container_fs_usage_bytes from a container's first scrape. Bigger layers wait for the worker.
FIRST_MEASUREMENT_ENTRIES = 4096


# --- conversions (pure) ---------------------------------------------------------------------------


def container_attributes(entry: dict[str, Any]) -> api.ContainerAttributes | None:
    """The CRI attributes of a container from its Docker list entry; None when not ours."""
    try:
        parsed = naming.parse_container_name((entry.get("Names") or [""])[0])
    except ValueError:
        return None
    cri_labels, annotations = labels.extract_labels(entry.get("Labels"))
    return api.ContainerAttributes(
        id=entry["Id"],
        metadata=api.ContainerMetadata(name=parsed.name, attempt=parsed.attempt),
        labels=cri_labels,
        annotations=annotations,
    )


def sandbox_attributes(entry: dict[str, Any]) -> api.PodSandboxAttributes | None:
    """The CRI attributes of a pod sandbox from its Docker list entry; None when not ours."""
    try:
        parsed = naming.parse_sandbox_name((entry.get("Names") or [""])[0])
    except ValueError:
        return None
    cri_labels, annotations = labels.extract_labels(entry.get("Labels"))
    return api.PodSandboxAttributes(
        id=entry["Id"],
        metadata=api.PodSandboxMetadata(
            name=parsed.name, namespace=parsed.namespace, uid=parsed.uid, attempt=parsed.attempt
        ),
        labels=cri_labels,
        annotations=annotations,
    )


def container_matches(entry: dict[str, Any], attributes: api.ContainerAttributes,
                      stats_filter: api.ContainerStatsFilter | None) -> bool:
    """The CRI filter: IDs as prefixes (crictl passes short ones), labels matched exactly."""
    if stats_filter is None:
        return True
    if not entry["Id"].startswith(stats_filter.id):
        return False
    sandbox_id = (entry.get("Labels") or {}).get(labels.SANDBOX_ID_LABEL, "")
    if stats_filter.pod_sandbox_id and not sandbox_id.startswith(stats_filter.pod_sandbox_id):
        return False
    return labels.matches_selector(attributes.labels, stats_filter.label_selector)


def sandbox_matches(attributes: api.PodSandboxAttributes, stats_filter: api.PodSandboxStatsFilter | None) -> bool:
    if stats_filter is None:
        return True
    return attributes.id.startswith(stats_filter.id) and labels.matches_selector(
        attributes.labels, stats_filter.label_selector
    )


def fill_psi(target: api.PsiStats, pressure: Pressure) -> None:
    """The kernel counts stalled time in microseconds; the CRI (and the kubelet's summary API) in
    nanoseconds. Filled in place: a message built and copied costs twice as much."""
    for stall, data in ((pressure.some, target.Some), (pressure.full, target.Full)):
        if stall is not None:
            data.Total = stall.total_us * 1000
            data.Avg10, data.Avg60, data.Avg300 = stall.avg10, stall.avg60, stall.avg300


def cpu_usage(sample: CgroupSample, nano_cores: int | None, timestamp: int) -> api.CpuUsage:
    usage = api.CpuUsage(timestamp=timestamp, usage_core_nano_seconds=api.UInt64Value(value=sample.cpu_usage_ns))
    if nano_cores is not None:
        usage.usage_nano_cores.value = nano_cores
    if sample.cpu_pressure is not None:
        fill_psi(usage.psi, sample.cpu_pressure)
    return usage


def memory_usage(sample: CgroupSample, timestamp: int) -> api.MemoryUsage:
    usage = api.MemoryUsage(
        timestamp=timestamp,
        working_set_bytes=api.UInt64Value(value=sample.memory_working_set),
        usage_bytes=api.UInt64Value(value=sample.memory_usage),
        rss_bytes=api.UInt64Value(value=sample.memory_rss),
        page_faults=api.UInt64Value(value=sample.page_faults),
        major_page_faults=api.UInt64Value(value=sample.major_page_faults),
    )
    if sample.memory_available is not None:
        usage.available_bytes.value = sample.memory_available
    if sample.memory_pressure is not None:
        fill_psi(usage.psi, sample.memory_pressure)
    return usage


def io_usage(sample: CgroupSample, timestamp: int) -> api.IoUsage | None:
    """I/O pressure: all the CRI asks of I/O so far."""
    if sample.io_pressure is None:
        return None
    usage = api.IoUsage(timestamp=timestamp)
    fill_psi(usage.psi, sample.io_pressure)
    return usage


def swap_usage(sample: CgroupSample, timestamp: int) -> api.SwapUsage | None:
    """Swap figures, when the kernel accounts swap (v1 needs swapaccount=1)."""
    if sample.swap_usage is None:
        return None
    usage = api.SwapUsage(timestamp=timestamp, swap_usage_bytes=api.UInt64Value(value=sample.swap_usage))
    if sample.swap_available is not None:
        usage.swap_available_bytes.value = sample.swap_available
    return usage


def process_usage(sample: CgroupSample, timestamp: int) -> api.ProcessUsage | None:
    if sample.tasks is None:
        return None
    return api.ProcessUsage(timestamp=timestamp, process_count=api.UInt64Value(value=sample.tasks))


def _interface_usage(name: str, counters: InterfaceCounters) -> api.NetworkInterfaceUsage:
    return api.NetworkInterfaceUsage(
        name=name,
        rx_bytes=api.UInt64Value(value=counters.rx_bytes),
        rx_errors=api.UInt64Value(value=counters.rx_errors),
        tx_bytes=api.UInt64Value(value=counters.tx_bytes),
        tx_errors=api.UInt64Value(value=counters.tx_errors),
    )


def network_usage(interfaces: dict[str, InterfaceCounters], timestamp: int) -> api.NetworkUsage | None:
    """eth0 as the default interface (the first other one without it), the rest beside; no loopback."""
    names = sorted(name for name in interfaces if name != "lo")
    if not names:
        return None
    default = DEFAULT_INTERFACE if DEFAULT_INTERFACE in names else names[0]
    return api.NetworkUsage(
        timestamp=timestamp,
        default_interface=_interface_usage(default, interfaces[default]),
        interfaces=[_interface_usage(name, interfaces[name]) for name in names if name != default],
    )


def writable_layer_usage(usage: LayerUsage, mountpoint: str) -> api.FilesystemUsage:
    layer = api.FilesystemUsage(
        timestamp=usage.timestamp_ns,
        fs_id=api.FilesystemIdentifier(mountpoint=mountpoint),
        used_bytes=api.UInt64Value(value=usage.used_bytes),
    )
    if usage.inodes is not None:
        layer.inodes_used.value = usage.inodes
    return layer


def image_name(entry: dict[str, Any]) -> str:
    """The image as the pod spec names it, for the metrics' `image` label."""
    return (entry.get("Labels") or {}).get(labels.USER_SPECIFIED_IMAGE_LABEL) or entry.get("Image") or ""


@dataclass(frozen=True)
class Inspected:
    """What one inspect of a container tells the stats; kept until Docker lists another state."""

    state: str
    pid: int
    cgroup_parent: str
    host_network: bool
    upper_dir: str
    started_at: int  # ns since the epoch, 0 when never started


def inspected(inspect: dict[str, Any]) -> Inspected:
    state = inspect.get("State") or {}
    host_config = inspect.get("HostConfig") or {}
    graph_driver = inspect.get("GraphDriver") or {}
    return Inspected(
        state=state.get("Status") or "",
        pid=int(state.get("Pid") or 0),
        cgroup_parent=host_config.get("CgroupParent") or "",
        host_network=host_config.get("NetworkMode") == "host",
        upper_dir=(graph_driver.get("Data") or {}).get("UpperDir", "") if graph_driver.get("Name") == "overlay2" else "",
        started_at=max(parse_docker_time(state.get("StartedAt")), 0),
    )


# --- the service (I/O) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """A container (or pause container) as inspected, with its cgroups located."""

    state: str
    sandbox: bool
    inspected: Inspected
    cgroup: tuple[str, CgroupDirs] | None  # (hierarchy path, directories) while it runs
    pod_cgroup: tuple[str, CgroupDirs] | None  # sandboxes with a cgroup parent only
    pid_start: int | None  # of the pause process, to tell it from a later process with its pid


@dataclass(frozen=True)
class _Reading:
    """A cgroup sample and when it was taken, on both clocks: rates need one, timestamps the other."""

    sample: CgroupSample
    monotonic_ns: int
    wall_ns: int


@dataclass(frozen=True, eq=False)
class _BuiltFrom:
    """What a ContainerStats is made of. A reading is reused within its window, so ListPodSandboxStats,
    asked right after ListContainerStats, finds the same objects and the message already built.
    Compared by identity (`same`): comparing the messages by value would cost what reuse saves."""

    attributes: api.ContainerAttributes
    reading: _Reading | None
    layer: LayerUsage | None
    mountpoint: str

    def same(self, other: _BuiltFrom) -> bool:
        return (self.attributes is other.attributes and self.reading is other.reading
                and self.layer is other.layer and self.mountpoint == other.mountpoint)


@dataclass
class _Container:
    """One listed container on its way to a ContainerStats."""

    entry: dict[str, Any]
    attributes: api.ContainerAttributes
    known: _Known | None = None
    reading: _Reading | None = None


class StatsService:
    def __init__(self, docker: DockerClient, config: Config, reader: CgroupReader | None = None,
                 reading_reuse_ns: int = READING_REUSE_NS) -> None:
        self._docker = docker
        self._reader = reader
        self._processes = ProcessFiles()
        self._rates = CpuRates()
        self._layers = WritableLayers(
            config.writable_layer_scan_period, config.writable_layer_scan_rate, docker.writable_layer_size
        )
        # No walking of layers at all when their measurement is turned off.
        self._first_measurement_entries = FIRST_MEASUREMENT_ENTRIES if config.writable_layer_scan_period > 0 else 0
        self._lock = threading.Lock()
        self._known: dict[str, tuple[_Known, float]] = {}
        self._readings: dict[tuple[str, bool], _Reading] = {}  # by (cgroup, detailed)
        self._container_attributes: ConvertedEntries[api.ContainerAttributes | None] = ConvertedEntries(
            lambda entry, _: container_attributes(entry))
        self._sandbox_attributes: ConvertedEntries[api.PodSandboxAttributes | None] = ConvertedEntries(
            lambda entry, _: sandbox_attributes(entry))
        # A container's ContainerStats, by ID, with what it was built from (_BuiltFrom).
        self._built: dict[str, tuple[_BuiltFrom, api.ContainerStats]] = {}
        self._reading_reuse_ns = reading_reuse_ns
        self._pruned_at = time.monotonic()

    def close(self) -> None:
        """Stop the writable-layer worker."""
        self._layers.close()

    def writable_layers_bytes(self) -> int:
        """The containers' writable layers in all, as ListContainerStats reports them (no cgroup read).

        ImageFsInfo gives this for the containers' filesystem, as cri-dockerd summed its cached
        sizes: `docker system df` would have dockerd walk every layer on every call. A layer
        not measured yet counts from its first measurement on.
        """
        containers = self._containers(None)
        self._learn(containers)
        layers = (self._layer(container.entry["Id"], container.known) for container in containers)
        return sum(layer.used_bytes for layer in layers if layer is not None)

    # --- ContainerStats -------------------------------------------------------------------------

    def container_stats(self, container_id: str) -> api.ContainerStats:
        """Stats of one container, by ID or unique ID prefix."""
        if not container_id:
            raise invalid_argument("container_id is empty")
        matches = self._containers(api.ContainerStatsFilter(id=container_id))
        if len(matches) > 1:
            shown = ", ".join(sorted(item.entry["Id"][:12] for item in matches))
            raise invalid_argument(f"container id prefix {container_id!r} is ambiguous: it matches {shown}")
        stats = self._stats_of(matches)
        if matches and matches[0].entry.get("State") in LIVE_STATES and matches[0].reading is None:
            # Listed running, yet its cgroup is gone: removed a moment ago behind the shim's back,
            # before Docker's event reached the index? Ask for the events, then the list again.
            self._docker.catch_up()
            if not self._containers(api.ContainerStatsFilter(id=matches[0].entry["Id"])):
                matches = []
        if not matches:
            raise not_found(f"container {container_id!r} not found")
        return stats[0]

    # --- ListContainerStats ---------------------------------------------------------------------

    def list_container_stats(self, stats_filter: api.ContainerStatsFilter | None) -> list[api.ContainerStats]:
        """Every container matching the filter, exited ones with their attributes and layer only."""
        return self._stats_of(self._containers(stats_filter))

    def _containers(self, stats_filter: api.ContainerStatsFilter | None) -> list[_Container]:
        """One Docker list call, narrowed by every filter Docker can apply, then ours."""
        docker_filters = labels.container_list_filters(
            *((stats_filter.id, stats_filter.pod_sandbox_id, stats_filter.label_selector)
              if stats_filter is not None else ("", "", {}))
        )
        if docker_filters is None:
            return []
        entries = self._docker.list_containers(docker_filters)
        if _unfiltered(stats_filter):
            listed = {entry["Id"] for entry in entries}
            self._forget_unlisted(listed, containers_only=True)
            self._container_attributes.keep_only(listed)
        containers = []
        for entry in entries:
            attributes = self._container_attributes.get(entry)
            if attributes is not None and container_matches(entry, attributes, stats_filter):
                containers.append(_Container(entry, attributes))
        return containers

    def _stats_of(self, containers: list[_Container]) -> list[api.ContainerStats]:
        """CPU, memory and swap of the running ones, the writable layer of all."""
        self._learn(containers)
        return self._built_stats(containers, self._mountpoint())

    def _built_stats(self, containers: list[_Container], mountpoint: str) -> list[api.ContainerStats]:
        """ContainerStats of learnt containers, each built again only when what it is made of changed."""
        result = []
        budget = _WalkBudget(self._first_measurement_entries)
        for container in containers:
            container_id = container.entry["Id"]
            container.reading = self._read(container_id, container.known)
            layer = self._layer(container_id, container.known)
            if layer is None and container.known is not None:  # a new container's, before the worker's turn
                layer = _first_measurement(container.known.inspected.upper_dir, budget)
            built_from = _BuiltFrom(container.attributes, container.reading, layer, mountpoint)
            built = self._built.get(container_id)
            if built is None or not built[0].same(built_from):
                built = (built_from, self._container_stats(container_id, built_from))
                self._built[container_id] = built
            result.append(built[1])
        return result

    def _container_stats(self, container_id: str, source: _BuiltFrom) -> api.ContainerStats:
        stats = api.ContainerStats(attributes=source.attributes)
        if source.reading is not None:
            sample, now = source.reading.sample, source.reading.wall_ns
            stats.cpu.CopyFrom(cpu_usage(sample, self._rate(container_id, source.reading), now))
            stats.memory.CopyFrom(memory_usage(sample, now))
            swap = swap_usage(sample, now)
            if swap is not None:
                stats.swap.CopyFrom(swap)
            io = io_usage(sample, now)
            if io is not None:
                stats.io.CopyFrom(io)
        if source.layer is not None:
            stats.writable_layer.CopyFrom(writable_layer_usage(source.layer, source.mountpoint))
        return stats

    # --- PodSandboxStats ------------------------------------------------------------------------

    def pod_sandbox_stats(self, sandbox_id: str) -> api.PodSandboxStats:
        """Stats of one pod, by ID or unique ID prefix; a stopped pod has its attributes only."""
        if not sandbox_id:
            raise invalid_argument("pod_sandbox_id is empty")
        sandboxes, containers = self._pods(api.PodSandboxStatsFilter(id=sandbox_id), ready_only=False)
        if not sandboxes:
            raise not_found(f"pod sandbox {sandbox_id!r} not found")
        if len(sandboxes) > 1:
            shown = ", ".join(sorted(entry["Id"][:12] for entry, _ in sandboxes))
            raise invalid_argument(f"pod sandbox id prefix {sandbox_id!r} is ambiguous: it matches {shown}")
        return self._pod_stats(sandboxes, containers)[0]

    # --- ListPodSandboxStats --------------------------------------------------------------------

    def list_pod_sandbox_stats(self, stats_filter: api.PodSandboxStatsFilter | None) -> list[api.PodSandboxStats]:
        """Stats of every ready pod matching the filter: pod-level figures and each container's."""
        sandboxes, containers = self._pods(stats_filter, ready_only=True)
        return self._pod_stats(sandboxes, containers)

    def _pods(
        self, stats_filter: api.PodSandboxStatsFilter | None, ready_only: bool
    ) -> tuple[list[tuple[dict[str, Any], api.PodSandboxAttributes]], dict[str, list[_Container]]]:
        """Sandboxes matching the filter and the containers of each, from one Docker list call."""
        if stats_filter is not None and not _hex(stats_filter.id):
            return [], {}
        sandboxes = []
        containers: dict[str, list[_Container]] = {}
        # The type label without a value: pod sandboxes and containers in one call.
        entries = self._docker.list_containers({"label": [labels.CONTAINER_TYPE_LABEL]})
        listed = {entry["Id"] for entry in entries}
        self._forget_unlisted(listed, containers_only=False)
        self._container_attributes.keep_only(listed)
        self._sandbox_attributes.keep_only(listed)
        for entry in entries:
            docker_labels = entry.get("Labels") or {}
            if labels.is_sandbox(docker_labels):
                attributes = self._sandbox_attributes.get(entry)
                if attributes is None or not sandbox_matches(attributes, stats_filter):
                    continue
                if ready_only and entry.get("State") != "running":
                    continue
                sandboxes.append((entry, attributes))
            elif labels.is_container(docker_labels):
                container_attrs = self._container_attributes.get(entry)
                if container_attrs is not None:
                    sandbox_id = docker_labels.get(labels.SANDBOX_ID_LABEL, "")
                    containers.setdefault(sandbox_id, []).append(_Container(entry, container_attrs))
        wanted = {entry["Id"] for entry, _ in sandboxes}
        return sandboxes, {key: value for key, value in containers.items() if key in wanted}

    def _pod_stats(
        self, sandboxes: list[tuple[dict[str, Any], api.PodSandboxAttributes]], containers: dict[str, list[_Container]]
    ) -> list[api.PodSandboxStats]:
        pause = _pause_containers(sandboxes)
        self._learn([*pause.values(), *(member for members in containers.values() for member in members)])
        mountpoint = self._mountpoint()  # once: it costs a stat, and 110 pods ask for it
        results = []
        for entry, attributes in sandboxes:
            sandbox_id = entry["Id"]
            members = containers.get(sandbox_id, [])
            stats = api.PodSandboxStats(attributes=attributes, linux=api.LinuxPodSandboxStats())
            stats.linux.containers.extend(self._built_stats(members, mountpoint))
            known = pause[sandbox_id].known
            if known is None or known.state not in LIVE_STATES:
                results.append(stats)
                continue
            reading = self._pod_reading(sandbox_id, known, [pause[sandbox_id], *members])
            if reading is not None:
                sample, taken = reading.sample, reading.wall_ns
                stats.linux.cpu.CopyFrom(cpu_usage(sample, self._rate(sandbox_id, reading), taken))
                stats.linux.memory.CopyFrom(memory_usage(sample, taken))
                process = process_usage(sample, taken)
                if process is not None:
                    stats.linux.process.CopyFrom(process)
                io = io_usage(sample, taken)
                if io is not None:
                    stats.linux.io.CopyFrom(io)
            interfaces = self._interfaces(sandbox_id, known)  # read now, so stamped now
            network = network_usage(interfaces, time.time_ns()) if interfaces is not None else None
            if network is not None:
                stats.linux.network.CopyFrom(network)
            results.append(stats)
        return results

    def _pod_reading(self, sandbox_id: str, known: _Known, members: list[_Container]) -> _Reading | None:
        """The pod cgroup's figures, else (no cgroup parent) the sum of the pause and containers'."""
        if known.pod_cgroup is not None:
            reading = self._read(sandbox_id, known, pod_level=True)
            if reading is not None:
                return reading
        pause = members[0]
        pause.reading = self._read(sandbox_id, known)
        readings = [member.reading for member in members if member.reading is not None]
        sample = combined(reading.sample for reading in readings)
        if sample is None:  # none of them could be read
            return None
        return _Reading(sample,
                        max(reading.monotonic_ns for reading in readings), max(reading.wall_ns for reading in readings))

    def _interfaces(self, sandbox_id: str, known: _Known) -> dict[str, InterfaceCounters] | None:
        """The pod network namespace's counters, seen through the pause process; none on the host's."""
        if known.inspected.host_network or known.inspected.pid <= 0:
            return None
        interfaces = self._processes.net_dev(known.inspected.pid, known.pid_start)
        if interfaces is None:  # the pause process is gone (or its pid was reused): inspect again
            self._forget(sandbox_id)
        return interfaces

    # --- ListMetricDescriptors, ListPodSandboxMetrics -----------------------------------------

    def metric_descriptors(self) -> list[api.MetricDescriptor]:
        return metrics.descriptors()

    def pod_sandbox_metrics(self) -> list[api.PodSandboxMetrics]:
        """cAdvisor-style metrics of every ready pod: pod cgroup and network, then each running container."""
        sandboxes, containers = self._pods(None, ready_only=True)
        pause = _pause_containers(sandboxes)
        self._learn([*pause.values(), *(member for members in containers.values() for member in members)])
        mountpoint = self._mountpoint()
        filesystem = filesystem_of(mountpoint)
        budget = _WalkBudget(self._first_measurement_entries)
        results = []
        for entry, attributes in sandboxes:
            sandbox_id = entry["Id"]
            known = pause[sandbox_id].known
            if known is None or known.state not in LIVE_STATES:
                continue
            pod_cgroup = known.pod_cgroup or known.cgroup
            pod = {"pod": attributes.metadata.name, "namespace": attributes.metadata.namespace,
                   "container": "", "image": "", "name": "", "id": pod_cgroup[0] if pod_cgroup else ""}
            pod_metrics = api.PodSandboxMetrics(pod_sandbox_id=sandbox_id)
            if known.pod_cgroup is not None:  # without one, the containers' metrics are all there is
                reading = self._read(sandbox_id, known, detailed=True, pod_level=True)
                if reading is not None:
                    metrics.add_cgroup_metrics(pod_metrics.metrics, pod, reading.sample)
                    metrics.add_last_seen_metric(pod_metrics.metrics, pod, reading.wall_ns)
            interfaces = self._interfaces(sandbox_id, known)
            if interfaces is not None:
                metrics.add_network_metrics(pod_metrics.metrics, {**pod, "name": _docker_name(entry)}, interfaces)
            for member in containers.get(sandbox_id, []):
                self._add_container_metrics(pod_metrics, member, pod, mountpoint, filesystem, budget)
            results.append(pod_metrics)
        return results

    def _add_container_metrics(
        self, pod_metrics: api.PodSandboxMetrics, member: _Container, pod: dict[str, str], mountpoint: str,
        filesystem: os.statvfs_result | None, budget: _WalkBudget,
    ) -> None:
        """A running container's metrics, labelled like cAdvisor's (`id` its cgroup, `name` Docker's)."""
        container_id = member.entry["Id"]
        reading = self._read(container_id, member.known, detailed=True)
        if reading is None or member.known is None or member.known.cgroup is None:
            return
        sample, seen = reading.sample, reading.wall_ns
        container = {**pod, "container": member.attributes.metadata.name, "id": member.known.cgroup[0],
                     "image": image_name(member.entry), "name": _docker_name(member.entry)}
        target = pod_metrics.container_metrics.add(container_id=container_id).metrics
        metrics.add_cgroup_metrics(target, container, sample)
        metrics.add_last_seen_metric(target, container, seen)
        try:
            metrics.add_process_metrics(target, container, self._cgroups().processes(member.known.cgroup[1]))
        except CgroupGone as exc:  # stopped since it was read
            log.debug("stats of %s: %s", container_id[:12], exc)
        if member.known.inspected.started_at:
            metrics.add_start_time_metric(target, container, member.known.inspected.started_at)
        layer = self._layer(container_id, member.known) or _first_measurement(member.known.inspected.upper_dir, budget)
        if layer is not None:
            metrics.add_writable_layer_metric(target, container, mountpoint, layer)
        if filesystem is not None:
            metrics.add_filesystem_metrics(target, container, mountpoint, filesystem)

    # --- helpers ------------------------------------------------------------------------------------

    def _learn(self, containers: Iterable[_Container]) -> None:
        """Attach what inspect told about each container, inspecting only those not known in this state."""
        containers = list(containers)
        now = time.monotonic()
        missing = []
        with self._lock:
            for container in containers:
                cached = self._known.get(container.entry["Id"])
                if cached is not None and cached[0].state == container.entry.get("State"):
                    container.known = cached[0]
                    self._known[container.entry["Id"]] = (cached[0], now)
                else:
                    missing.append(container)
            self._prune(now)
        if len(missing) == 1:
            missing[0].known = self._inspect(missing[0].entry)
        elif missing:
            with futures.ThreadPoolExecutor(max_workers=min(PARALLEL_INSPECTS, len(missing))) as pool:
                for container, known in zip(missing, pool.map(lambda item: self._inspect(item.entry), missing)):
                    container.known = known

    def _inspect(self, entry: dict[str, Any]) -> _Known | None:
        """Inspect once and locate the cgroups; None when the container vanished or Docker failed."""
        container_id = entry["Id"]
        try:
            facts = inspected(self._docker.inspect_container(container_id))
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                log.warning("stats of %s: inspect failed, figures left out: %s", container_id[:12], exc.message)
            return None
        driver = self._docker.info().get("CgroupDriver") or "cgroupfs"
        cgroup = pod_cgroup = None
        pid_start = None
        if facts.state in LIVE_STATES:
            cgroups = self._cgroups()
            cgroup = cgroups.locate(container_id, facts.cgroup_parent, driver, facts.pid)
            if labels.is_sandbox(entry.get("Labels")):
                pod_cgroup = cgroups.locate_pod(facts.cgroup_parent, driver)
                pid_start = self._processes.start_time(facts.pid) if facts.pid > 0 else None
            if cgroup is None:
                log.warning("stats of %s: its cgroup was not found (parent %r, driver %s)",
                            container_id[:12], facts.cgroup_parent, driver)
        known = _Known(entry.get("State") or facts.state, labels.is_sandbox(entry.get("Labels")), facts, cgroup,
                       pod_cgroup, pid_start)
        with self._lock:
            self._known[container_id] = (known, time.monotonic())
        return known

    def _read(self, container_id: str, known: _Known | None, detailed: bool = False, pod_level: bool = False
              ) -> _Reading | None:
        """The container's cgroup (or its pod's), read within the reuse window; None when it has
        none or it just went away."""
        cgroup = None if known is None else known.pod_cgroup if pod_level else known.cgroup
        if known is None or cgroup is None or known.state not in LIVE_STATES:
            return None
        key, now = (cgroup[0], detailed), time.monotonic_ns()
        with self._lock:
            reading = self._readings.get(key)
        if reading is not None and now - reading.monotonic_ns < self._reading_reuse_ns:
            return reading
        try:
            reading = _Reading(self._cgroups().read(cgroup[1], detailed), now, time.time_ns())
        except CgroupGone as exc:  # stopped since it was listed
            log.debug("stats of %s: %s", container_id[:12], exc)
            self._forget(container_id)
            return None
        with self._lock:
            self._readings[key] = reading
        return reading

    def _rate(self, key: str, reading: _Reading) -> int | None:
        return self._rates.rate(key, reading.sample.cpu_usage_ns, reading.monotonic_ns)

    def _layer(self, container_id: str, known: _Known | None) -> LayerUsage | None:
        if known is None:
            return None
        return self._layers.usage(container_id, known.inspected.upper_dir)

    def _forget(self, container_id: str) -> None:
        with self._lock:
            self._known.pop(container_id, None)

    def _forget_unlisted(self, listed: set[str], containers_only: bool) -> None:
        """Forget what inspect told about containers a full list no longer shows (removed)."""
        with self._lock:
            for container_id in [key for key, (known, _) in self._known.items()
                                 if key not in listed and not (containers_only and known.sandbox)]:
                del self._known[container_id]
            # A copy (atomic, as the GIL holds): requests add to _built outside the lock meanwhile.
            self._built = {key: built for key, built in self._built.copy().items() if key in listed}

    def _prune(self, now: float) -> None:
        """Forget containers not asked about for a while, so churn under filtered lists cannot grow the cache."""
        if now - self._pruned_at < FORGET_AFTER_SECONDS / 10:
            return
        self._pruned_at = now
        for container_id in [key for key, (_, used) in self._known.items() if now - used > FORGET_AFTER_SECONDS]:
            del self._known[container_id]
        self._built = {key: built for key, built in self._built.copy().items() if key in self._known}
        self._container_attributes.keep_only(set(self._known))
        self._sandbox_attributes.keep_only(set(self._known))
        now_ns = time.monotonic_ns()
        self._readings = {key: reading for key, reading in self._readings.items()
                          if now_ns - reading.monotonic_ns < self._reading_reuse_ns}

    def _cgroups(self) -> CgroupReader:
        if self._reader is None:
            try:
                self._reader = CgroupReader.for_this_host()
            except (OSError, ValueError) as exc:
                raise failed_precondition(f"cannot find this node's cgroup hierarchies: {exc}") from exc
        return self._reader

    def _mountpoint(self) -> str:
        return layers_mountpoint(self._docker.info())


class _OverBudget(Exception):
    """A request's walking budget is spent: the layer waits for the background worker."""


class _WalkBudget:
    """Directory entries a request may still walk itself (FIRST_MEASUREMENT_ENTRIES at first)."""

    def __init__(self, entries: int) -> None:
        self.left = entries

    def take(self, entries: int) -> None:
        """walk's pace: called after each directory; abandons the walk once the budget is spent."""
        self.left -= entries
        if self.left < 0:
            raise _OverBudget()


def _first_measurement(upper_dir: str, budget: _WalkBudget) -> LayerUsage | None:
    """An overlay2 layer the worker has not measured yet, walked now if the budget allows (None if not)."""
    if not upper_dir or budget.left <= 0:
        return None
    try:
        used, inodes = walk(upper_dir, budget.take)
    except (_OverBudget, OSError):
        return None
    return LayerUsage(used, inodes, time.time_ns())


def _unfiltered(stats_filter: api.ContainerStatsFilter | None) -> bool:
    return stats_filter is None or not (stats_filter.id or stats_filter.pod_sandbox_id or stats_filter.label_selector)


def _pause_containers(sandboxes: list[tuple[dict[str, Any], api.PodSandboxAttributes]]) -> dict[str, _Container]:
    """The pause container of each sandbox, to be inspected and read like the others."""
    return {entry["Id"]: _Container(entry, api.ContainerAttributes(id=entry["Id"])) for entry, _ in sandboxes}


def _hex(text: str) -> bool:
    """IDs are hex: anything else matches nothing (rather than being passed to Docker's filter)."""
    return all(char in "0123456789abcdef" for char in text)


def _docker_name(entry: dict[str, Any]) -> str:
    return str((entry.get("Names") or [""])[0]).removeprefix("/")
