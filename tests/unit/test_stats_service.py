"""StatsService against a fake Docker client and a fake cgroup v2 tree: what it asks Docker,
how often, and where pod-level figures come from."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockershim_py import labels, stats as stats_module
from dockershim_py.api import api_pb2 as api
from dockershim_py.cgroup_stats import CgroupLayout, CgroupReader, InterfaceCounters, Mount
from dockershim_py.config import Config
from dockershim_py.errors import CRIError
from dockershim_py.stats import StatsService

SANDBOX = "5" * 64
APP = "a" * 64
SIDECAR = "b" * 64
PARENT = "/kubepods/pod1"


def cgroup_files(memory: int, cpu_usec: int, tasks: int) -> dict[str, str]:
    return {
        "cpu.stat": f"usage_usec {cpu_usec}\nuser_usec {cpu_usec}\nsystem_usec 0\n",
        "memory.current": f"{memory}\n",
        "memory.stat": f"anon {memory // 2}\ninactive_file 1000\npgfault 7\npgmajfault 1\n",
        "memory.max": "max\n",
        "pids.current": f"{tasks}\n",
    }


class FakeDocker:
    """Answers list, inspect and info like dockerd would for one pod; records every call."""

    def __init__(self, cgroup_parent: str = PARENT) -> None:
        self.calls: list[tuple[str, str]] = []
        self.states = {SANDBOX: "running", APP: "running", SIDECAR: "running"}
        self.removed_unheard: set[str] = set()
        self.cgroup_parent = cgroup_parent
        self.root_dir = "/var/lib/docker"
        self.upper_root = "/nonexistent"

    def entry(self, container_id: str) -> dict[str, Any]:
        if container_id == SANDBOX:
            name, docker_labels = "/k8s_POD_web_default_uid1_0", labels.sandbox_labels({"app": "web"}, {})
        else:
            container = "app" if container_id == APP else "sidecar"
            name = f"/k8s_{container}_web_default_uid1_0"
            docker_labels = labels.container_labels({"c": container}, {}, SANDBOX)
        return {"Id": container_id, "Names": [name], "Image": "busybox", "State": self.states[container_id],
                "Labels": docker_labels}

    def catch_up(self) -> None:
        """The index takes in Docker's events it had not heard yet: removals made behind its back."""
        self.calls.append(("catch_up", ""))
        for container_id in self.removed_unheard:
            self.states.pop(container_id, None)
        self.removed_unheard.clear()

    def list_containers(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append(("list", repr(filters)))
        entries = [self.entry(container_id) for container_id in self.states]
        for wanted in filters.get("label", []):
            key, _, value = wanted.partition("=")
            entries = [entry for entry in entries if key in entry["Labels"] and value in ("", entry["Labels"][key])]
        return entries

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.calls.append(("inspect", container_id))
        if container_id not in self.states:
            raise CRIError(grpc.StatusCode.NOT_FOUND, "no such container")
        return {
            "State": {"Status": self.states[container_id], "Pid": 0, "StartedAt": "2024-05-01T10:20:30Z"},
            "HostConfig": {"CgroupParent": self.cgroup_parent, "NetworkMode": "host"},
            "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": f"{self.upper_root}/{container_id}"}},
        }

    def info(self) -> dict[str, Any]:
        self.calls.append(("info", ""))
        return {"CgroupDriver": "cgroupfs", "DockerRootDir": self.root_dir, "Driver": "overlay2"}

    def writable_layer_size(self, container_id: str) -> int:
        return 0

    def count(self, method: str) -> int:
        return sum(1 for called, _ in self.calls if called == method)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Cgroups of the pod (own figures, distinct from the sum) and of its three containers."""
    parent = PARENT.strip("/")
    for path, files in (
        (parent, cgroup_files(memory=900_000, cpu_usec=9_000_000, tasks=9)),
        (f"{parent}/{SANDBOX}", cgroup_files(memory=100_000, cpu_usec=1_000, tasks=1)),
        (f"{parent}/{APP}", cgroup_files(memory=300_000, cpu_usec=2_000_000, tasks=2)),
        (f"{parent}/{SIDECAR}", cgroup_files(memory=200_000, cpu_usec=1_000_000, tasks=3)),
    ):
        (tmp_path / path).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (tmp_path / path / name).write_text(text)
    return tmp_path


def service(docker: FakeDocker, tree: Path, reading_reuse_ns: int = 0) -> StatsService:
    """Every request reads the cgroups afresh unless a test is about reusing a reading."""
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree), "/")}))
    return StatsService(docker, Config(writable_layer_scan_period=0), reader,  # type: ignore[arg-type]
                        reading_reuse_ns=reading_reuse_ns)


def test_each_container_is_inspected_once_and_docker_never_asked_for_stats(tree: Path) -> None:
    docker = FakeDocker()
    stats = service(docker, tree)
    for _ in range(3):
        listed = stats.list_container_stats(None)
        assert {item.attributes.id for item in listed} == {APP, SIDECAR}
        assert {item.memory.working_set_bytes.value for item in listed} == {299_000, 199_000}
    assert docker.count("list") == 3  # one per request
    assert docker.count("inspect") == 2  # once per container, not per request
    assert {method for method, _ in docker.calls} == {"list", "inspect", "info"}


def test_a_state_change_is_inspected_again(tree: Path) -> None:
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    docker.states[APP] = "exited"
    shutil.rmtree(tree / PARENT.strip("/") / APP)
    app = stats.container_stats(APP[:8])
    assert not app.HasField("cpu") and not app.HasField("memory")
    assert docker.calls.count(("inspect", APP)) == 2


def test_a_cgroup_gone_under_a_running_container_is_looked_up_again(tree: Path) -> None:
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    (tree / PARENT.strip("/") / APP / "memory.current").unlink()  # stopped between list and read
    assert not stats.container_stats(APP).HasField("memory")
    (tree / PARENT.strip("/") / APP / "memory.current").write_text("300000\n")
    assert stats.container_stats(APP).memory.usage_bytes.value == 300_000
    assert docker.calls.count(("inspect", APP)) == 2


def test_a_container_removed_just_now_behind_the_shims_back_is_not_found(tree: Path) -> None:
    """Its cgroup is gone while the index, not yet told by Docker's event, still lists it running."""
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    shutil.rmtree(tree / PARENT.strip("/") / APP)
    docker.removed_unheard.add(APP)
    with pytest.raises(CRIError) as missing:
        stats.container_stats(APP)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert ("catch_up", "") in docker.calls


def test_removed_containers_are_forgotten_by_a_full_list(tree: Path) -> None:
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    del docker.states[SIDECAR]
    stats.list_container_stats(api.ContainerStatsFilter())  # an empty filter is a full list
    docker.states[SIDECAR] = "running"  # the same ID back: what was known about it is gone
    stats.list_container_stats(None)
    assert docker.calls.count(("inspect", SIDECAR)) == 2
    assert docker.calls.count(("inspect", APP)) == 1


def test_pod_figures_come_from_the_pod_cgroup(tree: Path) -> None:
    stats = service(FakeDocker(), tree)
    pod = stats.pod_sandbox_stats(SANDBOX[:6])
    assert pod.attributes.metadata.name == "web" and dict(pod.attributes.labels) == {"app": "web"}
    assert pod.linux.memory.usage_bytes.value == 900_000
    assert pod.linux.cpu.usage_core_nano_seconds.value == 9_000_000_000
    assert pod.linux.process.process_count.value == 9
    assert {member.attributes.metadata.name for member in pod.linux.containers} == {"app", "sidecar"}
    assert not pod.linux.HasField("network")  # host network


def docker_without_cgroup_parent(tree: Path) -> FakeDocker:
    """A pod Docker placed without a cgroup parent: each container's cgroup under docker/."""
    parent = tree / PARENT.strip("/")
    (tree / "docker").mkdir()
    for container_id in (SANDBOX, APP, SIDECAR):
        shutil.copytree(parent / container_id, tree / "docker" / container_id)
    return FakeDocker(cgroup_parent="")


def test_pod_without_cgroup_parent_sums_pause_and_containers(tree: Path) -> None:
    docker = docker_without_cgroup_parent(tree)
    pod = service(docker, tree).list_pod_sandbox_stats(None)[0]
    assert pod.linux.memory.usage_bytes.value == 600_000
    assert pod.linux.process.process_count.value == 6
    assert not pod.linux.memory.HasField("available_bytes")


def test_a_reading_answers_the_pod_stats_asked_right_after_the_container_stats(tree: Path) -> None:
    """The kubelet asks both back to back: each cgroup is read once, and both report the same sample."""
    docker = docker_without_cgroup_parent(tree)
    stats = service(docker, tree, reading_reuse_ns=60_000_000_000)
    read: list[str] = []
    reader = stats._cgroups()
    original = reader.read
    reader.read = lambda dirs, detailed=False: read.append(dirs.memory) or original(dirs, detailed)  # type: ignore
    containers = {item.attributes.id: item for item in stats.list_container_stats(None)}
    pod = stats.list_pod_sandbox_stats(None)[0]
    assert sorted(Path(path).name for path in read) == sorted([APP, SIDECAR, SANDBOX])
    for member in pod.linux.containers:
        assert member.memory == containers[member.attributes.id].memory  # the same sample, timestamp and all
    (tree / "docker" / APP / "memory.current").write_text("1\n")
    assert stats.container_stats(APP).memory.usage_bytes.value == 300_000  # within the window
    assert service(docker, tree).container_stats(APP).memory.usage_bytes.value == 1  # past it (none here)


class StableDocker(FakeDocker):
    """Hands out the same entry object while a container is unchanged, as the event index does."""

    def __init__(self) -> None:
        super().__init__()
        self.cri_labels: dict[str, dict[str, str]] = {}
        self._kept: dict[str, dict[str, Any]] = {}

    def entry(self, container_id: str) -> dict[str, Any]:
        made = super().entry(container_id)
        if container_id in self.cri_labels:
            made["Labels"] = labels.container_labels(self.cri_labels[container_id], {}, SANDBOX)
        if self._kept.get(container_id) != made:
            self._kept[container_id] = made
        return self._kept[container_id]


def test_the_pod_stats_reuse_the_container_stats_made_from_the_same_reading(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    original = stats_module.memory_usage
    monkeypatch.setattr(stats_module, "memory_usage", lambda sample, at: made.append(at) or original(sample, at))
    docker = StableDocker()
    stats = service(docker, tree, reading_reuse_ns=60_000_000_000)
    containers = {item.attributes.id: item for item in stats.list_container_stats(None)}
    pod = stats.list_pod_sandbox_stats(None)[0]
    assert len(made) == 3  # each container once, and the pod cgroup
    assert {member.attributes.id: member for member in pod.linux.containers} == containers
    docker.cri_labels[APP] = {"c": "relabelled"}  # a new entry: its attributes follow at once
    relabelled = {item.attributes.id: item for item in stats.list_container_stats(None)}
    assert dict(relabelled[APP].attributes.labels) == {"c": "relabelled"}
    assert relabelled[SIDECAR] == containers[SIDECAR] and len(made) == 4


def test_a_new_reading_makes_new_container_stats(tree: Path) -> None:
    stats = service(StableDocker(), tree)  # no reuse: every request reads afresh
    first = {item.attributes.id: item for item in stats.list_container_stats(None)}
    (tree / PARENT.strip("/") / APP / "memory.current").write_text("1\n")
    second = {item.attributes.id: item for item in stats.list_container_stats(None)}
    assert first[APP].memory.usage_bytes.value == 300_000 and second[APP].memory.usage_bytes.value == 1
    assert second[SIDECAR].memory.timestamp > first[SIDECAR].memory.timestamp


def test_what_was_kept_for_containers_asked_about_one_at_a_time_is_forgotten_in_time(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a full list to prune them, kept messages go with the containers not asked about."""
    stats = service(StableDocker(), tree)
    stats.container_stats(APP)
    monkeypatch.setattr(stats_module, "FORGET_AFTER_SECONDS", 0.0)
    stats.container_stats(SIDECAR)  # prunes everything not asked about just now
    assert SIDECAR in stats._built and APP not in stats._built
    assert APP not in stats._container_attributes._made


def test_network_counters_read_now_are_stamped_now_beside_a_reused_cgroup_reading(tree: Path) -> None:
    docker = FakeDocker()
    inspected = docker.inspect_container
    docker.inspect_container = lambda container_id: {  # type: ignore[method-assign]
        **inspected(container_id), "State": {"Status": "running", "Pid": 4242}, "HostConfig": {
            "CgroupParent": PARENT, "NetworkMode": "default"}}
    stats = service(docker, tree, reading_reuse_ns=60_000_000_000)
    counters = InterfaceCounters(100, 1, 0, 0, 200, 2, 0, 0)
    stats._processes.net_dev = lambda pid, start: {"eth0": counters}  # type: ignore[method-assign]
    first = stats.pod_sandbox_stats(SANDBOX)
    time.sleep(0.01)
    second = stats.pod_sandbox_stats(SANDBOX)
    assert second.linux.cpu.timestamp == first.linux.cpu.timestamp  # the same cgroup reading
    assert second.linux.network.timestamp > first.linux.network.timestamp  # counters read again


def test_bad_ids(tree: Path) -> None:
    stats = service(FakeDocker(), tree)
    for call, bad in ((stats.container_stats, ""), (stats.pod_sandbox_stats, "")):
        with pytest.raises(CRIError) as caught:
            call(bad)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for call, unknown in ((stats.container_stats, "c" * 64), (stats.container_stats, SANDBOX),
                          (stats.pod_sandbox_stats, APP), (stats.pod_sandbox_stats, "xyz")):
        with pytest.raises(CRIError) as caught:
            call(unknown)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert stats.list_container_stats(api.ContainerStatsFilter(pod_sandbox_id="not hex")) == []


def test_metrics_of_the_pod_and_its_running_containers(tree: Path) -> None:
    stats = service(FakeDocker(), tree)
    [pod] = stats.pod_sandbox_metrics()
    assert pod.pod_sandbox_id == SANDBOX
    assert {metrics.container_id for metrics in pod.container_metrics} == {APP, SIDECAR}
    names = {metric.name for metric in pod.metrics}
    assert "container_memory_working_set_bytes" in names and "container_network_receive_bytes_total" not in names


def layered(tree: Path) -> FakeDocker:
    """Docker with its storage and small overlay2 upper layers in the tree: 3 files of the app, 1 of the sidecar."""
    docker = FakeDocker()
    docker.root_dir = str(tree / "docker-root")
    docker.upper_root = str(tree / "docker-root" / "overlay2")
    for container_id, files in ((APP, 3), (SIDECAR, 1)):
        upper = tree / "docker-root" / "overlay2" / container_id
        upper.mkdir(parents=True)
        for number in range(files):
            (upper / f"f{number}").write_bytes(b"x" * 5000)
    return docker


def container_metrics(pod: api.PodSandboxMetrics, container_id: str) -> dict[str, int]:
    [container] = [metrics for metrics in pod.container_metrics if metrics.container_id == container_id]
    return {metric.name: metric.value.value for metric in container.metrics}


def test_metrics_count_processes_and_measure_a_new_layer_at_once(tree: Path) -> None:
    """The worker has not measured yet at the first request: small layers are walked by the request."""
    (tree / PARENT.strip("/") / APP / "cgroup.procs").write_text("10\n")
    (tree / "proc" / "10" / "fd").mkdir(parents=True)
    for number, target in enumerate(["/dev/null", "pipe:[1]", "pipe:[2]", "socket:[3]"]):
        (tree / "proc" / "10" / "fd" / str(number)).symlink_to(target)
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree), "/")}), proc_root=str(tree / "proc"))
    stats = StatsService(layered(tree), Config(writable_layer_scan_period=3600), reader)  # type: ignore[arg-type]
    try:
        [pod] = stats.pod_sandbox_metrics()
    finally:
        stats.close()
    app = container_metrics(pod, APP)
    assert (app["container_processes"], app["container_file_descriptors"], app["container_sockets"]) == (1, 4, 1)
    assert app["container_fs_usage_bytes"] >= 3 * 5000
    assert app["container_fs_inodes_total"] >= app["container_fs_inodes_free"] > 0
    assert app["container_fs_limit_bytes"] > 0 and app["container_last_seen"] > 0
    sidecar = container_metrics(pod, SIDECAR)
    assert "container_processes" not in sidecar  # its cgroup.procs is gone: left out, the rest is there
    assert sidecar["container_fs_usage_bytes"] >= 5000
    assert "container_last_seen" in {metric.name for metric in pod.metrics}


@pytest.mark.parametrize("budget, measured", [(4, {APP}), (3, set())])
def test_a_request_walks_new_layers_within_its_budget_only(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                                           budget: int, measured: set[str]) -> None:
    """The app's layer is 4 entries (its root and 3 files): it spends a budget of 4, a budget of 3 stops it."""
    monkeypatch.setattr(stats_module, "FIRST_MEASUREMENT_ENTRIES", budget)
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree), "/")}))
    stats = StatsService(layered(tree), Config(writable_layer_scan_period=3600), reader)  # type: ignore[arg-type]
    try:
        [pod] = stats.pod_sandbox_metrics()
    finally:
        stats.close()
    assert {container_id for container_id in (APP, SIDECAR)
            if "container_fs_usage_bytes" in container_metrics(pod, container_id)} == measured


def test_no_layer_is_walked_when_measuring_is_off(tree: Path) -> None:
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree), "/")}))
    stats = StatsService(layered(tree), Config(writable_layer_scan_period=0), reader)  # type: ignore[arg-type]
    [pod] = stats.pod_sandbox_metrics()
    assert "container_fs_usage_bytes" not in container_metrics(pod, APP)
    assert "container_fs_limit_bytes" in container_metrics(pod, APP)


def test_writable_layers_in_all_come_from_the_worker_without_reading_cgroups(tree: Path) -> None:
    """What ImageFsInfo reports for the containers: their layers as the worker measured them."""
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree / "no-cgroups"), "/")}))  # a read would fail
    docker = layered(tree)
    stats = StatsService(docker, Config(writable_layer_scan_period=3600), reader)  # type: ignore[arg-type]
    try:
        first = stats.writable_layers_bytes()  # asks the worker to measure both
        deadline = time.monotonic() + 5
        while stats.writable_layers_bytes() < 4 * 5000 and time.monotonic() < deadline:
            time.sleep(0.01)
        total = stats.writable_layers_bytes()
    finally:
        stats.close()
    assert first == 0
    assert 4 * 5000 <= total < 4 * 5000 + 64 * 1024  # the files, and each layer's directory blocks
    assert docker.count("inspect") == 2  # the app and the sidecar, once each (a pause container is no CRI container)


class TwoPods(FakeDocker):
    """The one pod, and a second (a pause and one container) under a cgroup parent of its own."""

    SANDBOX2, WORKER = "6" * 64, "c" * 64

    def __init__(self) -> None:
        super().__init__()
        self.states.update({self.SANDBOX2: "running", self.WORKER: "running"})

    def entry(self, container_id: str) -> dict[str, Any]:
        if container_id == self.SANDBOX2:
            return {"Id": container_id, "Names": ["/k8s_POD_db_default_uid2_0"], "Image": "pause",
                    "State": self.states[container_id], "Labels": labels.sandbox_labels({"app": "db"}, {})}
        if container_id == self.WORKER:
            return {"Id": container_id, "Names": ["/k8s_worker_db_default_uid2_0"], "Image": "busybox",
                    "State": self.states[container_id],
                    "Labels": labels.container_labels({"c": "worker"}, {}, self.SANDBOX2)}
        return super().entry(container_id)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        inspect = super().inspect_container(container_id)
        if container_id in (self.SANDBOX2, self.WORKER):
            inspect["HostConfig"]["CgroupParent"] = "/kubepods/pod2"
        return inspect


def test_each_pod_lists_its_own_containers_and_the_layers_mountpoint_is_found_once_a_request(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mountpoint is the same for every pod, and finding it costs a stat: 110 pods, 110 stats."""
    found: list[str] = []

    def layers_mountpoint(info: dict[str, Any]) -> str:
        found.append(mountpoint := original(info))
        return mountpoint

    original = stats_module.layers_mountpoint
    monkeypatch.setattr(stats_module, "layers_mountpoint", layers_mountpoint)
    for container_id, memory in (("", 800_000), (TwoPods.SANDBOX2, 50_000), (TwoPods.WORKER, 400_000)):
        path = tree / "kubepods" / "pod2" / container_id
        path.mkdir(parents=True, exist_ok=True)
        for name, text in cgroup_files(memory=memory, cpu_usec=1_000, tasks=1).items():
            (path / name).write_text(text)
    docker = TwoPods()
    docker.root_dir = str(tree / "docker-root")
    docker.upper_root = str(tree / "docker-root" / "overlay2")
    for container_id in (APP, SIDECAR, TwoPods.WORKER):
        (tree / "docker-root" / "overlay2" / container_id).mkdir(parents=True)
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tree), "/")}))
    stats = StatsService(docker, Config(writable_layer_scan_period=3600), reader)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 5
        while True:  # the first request has the worker measure the layers; the worker answers later ones
            found.clear()
            pods = {pod.attributes.id: pod for pod in stats.list_pod_sandbox_stats(None)}
            members = [member for pod in pods.values() for member in pod.linux.containers]
            if all(member.HasField("writable_layer") for member in members) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    finally:
        stats.close()
    assert len(found) == 1
    assert {member.attributes.id for member in pods[SANDBOX].linux.containers} == {APP, SIDECAR}
    [worker] = pods[TwoPods.SANDBOX2].linux.containers
    assert worker.attributes.id == TwoPods.WORKER and worker.memory.usage_bytes.value == 400_000
    assert pods[TwoPods.SANDBOX2].linux.memory.usage_bytes.value == 800_000
    mountpoints = {member.writable_layer.fs_id.mountpoint for pod in pods.values() for member in pod.linux.containers}
    assert mountpoints == set(found)


class AddsWhileAsked(set):
    """A set of listed IDs; each membership test lets a concurrent request store a new container's stats."""

    def __init__(self, items: set[str], built: dict[str, Any]) -> None:
        super().__init__(items)
        self.built = built

    def __contains__(self, key: object) -> bool:
        self.built.setdefault(f"new-{len(self.built)}", None)
        return super().__contains__(key)


def test_a_full_list_forgets_removed_containers_while_other_requests_store_stats(tree: Path) -> None:
    """Stats are stored outside the lock: rebuilding the store must not trip over a request adding to it."""
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    listed = AddsWhileAsked({SANDBOX, APP}, stats._built)
    stats._forget_unlisted(listed, containers_only=True)  # RuntimeError: dictionary changed size, before
    assert APP in stats._built and SIDECAR not in stats._built


def test_pruning_forgets_unused_containers_while_other_requests_store_stats(tree: Path) -> None:
    docker = FakeDocker()
    stats = service(docker, tree)
    stats.list_container_stats(None)
    built = stats._built

    class KnownAddingStats(dict):  # type: ignore[type-arg]
        def __contains__(self, key: object) -> bool:
            built.setdefault(f"new-{len(built)}", None)
            return super().__contains__(key)

    stats._known = KnownAddingStats(stats._known)
    stats._prune(time.monotonic() + 2 * stats_module.FORGET_AFTER_SECONDS)  # RuntimeError, before
    assert not stats._known and not stats._built  # every container unused for long enough is forgotten
