"""A kubelet-like load on dockershim-py, beside the same Docker work done directly with docker-py.

Phases, for each pod count N (default 10 and 110; two containers per pod):
  populate  RunPodSandbox and StartContainer through the shim, interleaved with the same Docker
            create+start calls made directly, so the shim's own overhead shows as a ratio;
  rpcs      per-RPC latency (p50, p95, p99, max) and the shim's CPU per call of what the kubelet
            calls, each beside the docker-py request(s) that answer the same question, and beside
            the gRPC floor: an empty server on the shim's gRPC transport (bench/grpc_floor.py)
            answering a canned PodSandboxStatus reply, called after each shim call, which is what
            gRPC and this machine cost at that moment without the shim (on the connection's
            thread for the calls the shim answers there, by a worker for the others);
  mixed     relist every 1 s (plus the PLEG follow-ups for a changed pod; in a process of its own,
            bench/pleg.py, as the kubelet's PLEG waits for none of its other loops), Status every 5 s, the
            stats / image-fs / log-manager sweep every 10 s, and churn (one pod stopped, removed and
            recreated every 2 s); relist latency under churn, errors, CPU seconds per minute of the
            shim and of dockerd, the shim's RSS before and after; then the same load answered by
            direct Docker calls, for dockerd's CPU. Each is run again without churn, which shows
            what answering the polling alone costs. Each run counts the RPCs it made, and what the
            gRPC floor server would spend on as many calls.
First it measures the machine: how long reading back 16 MiB takes at once and after 1 s untouched.
On a VM that makes idle memory slow to touch again, every call after a pause costs many times
more (the client's part as well), and its figures compare with no other machine's.
With --endpoint and --runtime-pid the same load goes to a CRI runtime already serving (cri-dockerd,
say), whose process is measured where the shim's would be.
Bounded in count and time; it talks only to local unix sockets. Output: a table and a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import docker
import grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from conftest import BUSYBOX, PAUSE, Shim  # noqa: E402  (the suite's shim launcher and images)
from dockershim_py.api import api_pb2 as api  # noqa: E402
from dockershim_py.api import api_pb2_grpc  # noqa: E402
from dockershim_py.cri.runtime_service import RuntimeServiceAdapter  # noqa: E402
from grpc_floor import FloorServer  # noqa: E402
from measure import (  # noqa: E402
    cpu_seconds, cpu_ticks, dockerd_pid, idle_memory_penalty, percentiles, rss_bytes, steal_percent,
)

NAMESPACE = "dspy-bench"
# A workload that ends on SIGTERM, as a well-behaved pod does: a bare `sleep` as PID 1 ignores it,
# so every stop would wait out the 10 s grace period and the churn would run at a tenth of its rate.
WORKLOAD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


# --- measuring ----------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def repeat(fn: Callable[[], Any], count: int, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        samples.append(timed(fn))
    return samples


class CountedStub:
    """A gRPC stub that counts the calls made through it, from any thread, and of them those the
    shim answers on the connection's thread."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self._lock = threading.Lock()
        self.calls = 0
        self.inline_calls = 0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        inline = name in RuntimeServiceAdapter.INLINE

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                self.inline_calls += inline
            return method(*args, **kwargs)

        return call


def repeat_paired(fn: Callable[[], Any], floor: Callable[[], Any], count: int, seconds: float
                  ) -> tuple[list[float], list[float]]:
    """`repeat` of `fn`, each call followed by one of `floor`: both meet the machine as it was."""
    samples: list[float] = []
    floor_samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        samples.append(timed(fn))
        floor_samples.append(timed(floor))
    return samples, floor_samples


def one_shot_stats(client: docker.APIClient, container_ids: list[str]) -> None:
    """Docker's one-shot stats of every container, NumCPU x 6 at a time, as cri-dockerd asks for them."""
    with futures.ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) * 6) as pool:
        list(pool.map(lambda container_id: client.stats(container_id, stream=False, one_shot=True), container_ids))


# --- the pods -----------------------------------------------------------------------------------


class Pods:
    """Creates and removes bench pods through the shim and keeps their ids."""

    def __init__(self, runtime: Any, log_root: Path) -> None:
        self.runtime = runtime
        self.log_root = log_root
        self.sandboxes: dict[str, str] = {}  # uid -> sandbox id
        self.containers: dict[str, list[str]] = {}  # uid -> container ids
        self.run_latencies: list[float] = []
        self.start_latencies: list[float] = []

    def create(self, index: int) -> str:
        uid = uuid.uuid4().hex
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=f"bench-{index}", uid=uid, namespace=NAMESPACE),
            hostname=f"bench-{index}",
            log_directory=str(self.log_root / uid),
            labels={"bench": "kubelet"},
        )
        started = time.perf_counter()
        sandbox_id = self.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        self.run_latencies.append(time.perf_counter() - started)
        self.sandboxes[uid] = sandbox_id
        self.containers[uid] = []
        for name in ("app", "sidecar"):
            (self.log_root / uid / name).mkdir(parents=True, exist_ok=True)  # the kubelet makes it; cri-dockerd needs it
            container = api.ContainerConfig(
                metadata=api.ContainerMetadata(name=name),
                image=api.ImageSpec(image=BUSYBOX),
                command=WORKLOAD,
                log_path=f"{name}/0.log",
            )
            container_id = self.runtime.CreateContainer(
                api.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=container, sandbox_config=config),
                timeout=120,
            ).container_id
            started = time.perf_counter()
            self.runtime.StartContainer(api.StartContainerRequest(container_id=container_id), timeout=120)
            self.start_latencies.append(time.perf_counter() - started)
            self.containers[uid].append(container_id)
        return uid

    def remove(self, uid: str) -> None:
        sandbox_id = self.sandboxes.pop(uid)
        self.containers.pop(uid, None)
        self.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        self.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    def remove_all(self) -> None:
        for uid in list(self.sandboxes):
            try:
                self.remove(uid)
            except grpc.RpcError as exc:
                print(f"warning: removing pod {uid}: {exc.details()}", file=sys.stderr)


class DirectPods:
    """The same pause + two busybox containers made with docker-py alone: the baseline."""

    def __init__(self, client: docker.APIClient) -> None:
        self.client = client
        self.ids: list[str] = []
        self.run_latencies: list[float] = []
        self.start_latencies: list[float] = []

    def create(self, index: int) -> None:
        """A pause container and two busybox containers in its namespaces, like one pod."""
        started = time.perf_counter()
        pause = self.client.create_container(
            PAUSE, name=f"dspy-bench-direct-{index}-{uuid.uuid4().hex[:6]}", hostname=f"bench-{index}",
            labels={"dspy-bench": "direct"},
            host_config=self.client.create_host_config(ipc_mode="shareable", cpu_shares=2, shm_size=64 << 20),
        )["Id"]
        self.client.start(pause)
        self.run_latencies.append(time.perf_counter() - started)
        self.ids.append(pause)
        for _ in range(2):
            container = self.client.create_container(
                BUSYBOX, command=WORKLOAD, labels={"dspy-bench": "direct"},
                host_config=self.client.create_host_config(
                    network_mode=f"container:{pause}", ipc_mode=f"container:{pause}", shm_size=64 << 20,
                ),
            )["Id"]
            started = time.perf_counter()
            self.client.start(container)
            self.start_latencies.append(time.perf_counter() - started)
            self.ids.append(container)

    def remove_oldest_pod(self) -> None:
        for container in reversed(self.ids[:3]):
            self.client.stop(container, timeout=10)
            self.client.remove_container(container, force=True)
        del self.ids[:3]

    def remove_all(self) -> None:
        for container in reversed(self.ids):
            try:
                self.client.remove_container(container, force=True)
            except docker.errors.NotFound:
                pass
        self.ids.clear()


# --- phases -------------------------------------------------------------------------------------


def call_or_none(fn: Callable[[], Any]) -> Callable[[], Any] | None:
    """The call if the shim implements it (one probe), else None so the row says so."""
    try:
        fn()
        return fn
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise


def rpc_phase(runtime: Any, images: Any, client: docker.APIClient, pods: Pods, shim_pid: int, count: int,
              seconds: float, transport: str = "http2") -> tuple[dict, dict]:
    """The rows, and the gRPC floor over all of them: each row's shim calls alternate with calls to
    the floor server, then docker-py's run."""
    uid = next(iter(pods.sandboxes))
    sandbox_id = pods.sandboxes[uid]
    container_id = pods.containers[uid][0]
    all_containers = [c for ids in pods.containers.values() for c in ids]
    sandbox_filter = {"label": "io.kubernetes.docker.type=podsandbox"}
    container_filter = {"label": "io.kubernetes.docker.type=container"}

    def relist() -> None:  # as the kubelet asks: no sandbox filter, an empty container filter
        runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60)
        runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter()), timeout=60)

    def streamed_relist() -> None:
        """The relist of a kubelet with the CRIListStreaming gate (KEP-5825)."""
        list(runtime.StreamPodSandboxes(api.StreamPodSandboxesRequest(), timeout=60))
        list(runtime.StreamContainers(api.StreamContainersRequest(), timeout=60))

    def direct_relist() -> None:
        client.containers(all=True, filters=sandbox_filter)
        client.containers(all=True, filters=container_filter)

    def direct_container_status() -> None:
        inspect = client.inspect_container(container_id)
        client.inspect_image(inspect["Image"])

    def direct_stats() -> None:
        one_shot_stats(client, all_containers)

    rows: dict[str, tuple[Callable[[], Any] | None, Callable[[], Any] | None]] = {
        "Version": (lambda: runtime.Version(api.VersionRequest(), timeout=60), lambda: client.version()),
        "Status": (lambda: runtime.Status(api.StatusRequest(), timeout=60), lambda: client.ping()),
        "ListPodSandbox": (
            lambda: runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60),
            lambda: client.containers(all=True, filters=sandbox_filter),
        ),
        "ListContainers": (
            lambda: runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter()), timeout=60),
            lambda: client.containers(all=True, filters=container_filter),
        ),
        "relist": (relist, direct_relist),
        "relist (streaming)": (streamed_relist, direct_relist),
        "PodSandboxStatus": (
            lambda: runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=60),
            lambda: client.inspect_container(sandbox_id),
        ),
        "ContainerStatus": (
            lambda: runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id), timeout=60),
            direct_container_status,
        ),
        "ListContainerStats": (
            lambda: runtime.ListContainerStats(api.ListContainerStatsRequest(), timeout=120),
            direct_stats,
        ),
        "ListPodSandboxStats": (
            lambda: runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=120),
            direct_stats,
        ),
        "ListImages": (lambda: images.ListImages(api.ListImagesRequest(), timeout=60), lambda: client.images()),
        "ImageFsInfo": (lambda: images.ImageFsInfo(api.ImageFsInfoRequest(), timeout=60), lambda: client.df()),
        "ExecSync": (
            lambda: runtime.ExecSync(api.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=10),
                                     timeout=60),
            lambda: client.exec_start(client.exec_create(container_id, ["true"])["Id"]),
        ),
    }
    floor_request = api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
    reply = runtime.PodSandboxStatus(floor_request, timeout=60).SerializeToString()
    payload = floor_request.SerializeToString()
    results: dict[str, dict] = {}
    all_floor_samples: list[float] = []
    with FloorServer(reply, transport) as floor:
        for name, (shim_call, direct_call) in rows.items():
            shim_call = call_or_none(shim_call)
            if shim_call is None:
                results[name] = {"shim": "UNIMPLEMENTED"}
                continue
            inline = name == "relist" or name in RuntimeServiceAdapter.INLINE
            # Stats fan out over every container directly: fewer rounds keep the run bounded.
            rounds = max(3, count // 10) if name in ("ListContainerStats", "ListPodSandboxStats") else count
            shim_cpu_before, floor_cpu_before, ticks = cpu_seconds(shim_pid), cpu_seconds(floor.process.pid), cpu_ticks()
            samples, floor_samples = repeat_paired(shim_call, lambda: floor(payload, inline), rounds, seconds)
            time.sleep(0.1)  # the servers' last replies are sent and their CPU counted
            shim_cpu = (cpu_seconds(shim_pid) - shim_cpu_before) * 1000 / len(samples)
            floor_row_cpu = cpu_seconds(floor.process.pid) - floor_cpu_before
            shim = {**percentiles(samples), "steal_percent": steal_percent(ticks)}
            all_floor_samples += floor_samples
            direct = percentiles(repeat(direct_call, rounds, seconds))
            results[name] = {"shim": shim, "shim_cpu_ms": shim_cpu, "floor": percentiles(floor_samples),
                             "floor_inline": inline, "floor_cpu_ms": floor_row_cpu * 1000 / len(floor_samples),
                             "docker": direct, "p99_ratio": shim["p99"] / direct["p99"]}
    return results, {
        "latency": percentiles(all_floor_samples),
        "server_cpu_ms": floor_cpu_ms(results, inline=False),
        "inline_server_cpu_ms": floor_cpu_ms(results, inline=True),
        "reply_bytes": len(reply),
    }


def floor_cpu_ms(results: dict[str, dict], inline: bool) -> float:
    """The floor server's CPU ms a call over the rows that met its worker (or its inline) method."""
    rows = [row for row in results.values() if row.get("floor_inline") is inline]
    calls = sum(row["floor"]["n"] for row in rows)
    return sum(row["floor_cpu_ms"] * row["floor"]["n"] for row in rows) / max(calls, 1)


class MixedLoad:
    """The kubelet's loops for `seconds`; `direct` answers them with docker-py instead.

    The PLEG (relist) runs in a process of its own (bench/pleg.py), as the kubelet's never waits
    for its stats loop; the other loops are threads here.
    """

    def __init__(self, runtime: Any, images: Any, client: docker.APIClient, pods: Pods, endpoint: str,
                 direct_pods: DirectPods | None = None) -> None:
        self.runtime, self.images, self.client, self.pods = runtime, images, client, pods
        self.endpoint = endpoint
        self.direct_pods = direct_pods
        self.direct = direct_pods is not None
        self.relist_latencies: list[float] = []
        self.relist_calls = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.churned = 0

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except (grpc.RpcError, docker.errors.APIError) as exc:
            self.errors.append(f"{what}: {exc.details() if isinstance(exc, grpc.RpcError) else exc}")

    def _every(self, period: float, what: str, fn: Callable[[], Any]) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self._guard(what, fn)
            next_at += period
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _start_pleg(self) -> subprocess.Popen:
        target = ["--direct"] if self.direct else ["--endpoint", self.endpoint]
        pleg = subprocess.Popen([sys.executable, str(Path(__file__).with_name("pleg.py")), *target],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert pleg.stdout is not None
        if pleg.stdout.readline().strip() != "ready":
            pleg.kill()
            raise SystemExit(f"bench/pleg.py did not start (exit {pleg.wait()})")
        return pleg

    def _finish_pleg(self, pleg: subprocess.Popen) -> None:
        output, _ = pleg.communicate(timeout=180)  # closes its stdin, which ends its loop
        if pleg.returncode != 0:
            raise SystemExit(f"bench/pleg.py failed (exit {pleg.returncode}); its error is above")
        figures = json.loads(output)
        self.relist_latencies.extend(figures["relist_seconds"])
        self.relist_calls += figures["calls"]
        self.errors.extend(figures["errors"])

    def status(self) -> None:
        if self.direct:
            self.client.ping()
        else:
            self.runtime.Status(api.StatusRequest(), timeout=60)

    def sweep(self) -> None:
        if self.direct:
            running = [c["Id"] for c in self.client.containers(filters={"label": "io.kubernetes.docker.type=container"})]
            one_shot_stats(self.client, running)
            for container_id in running:
                self.client.inspect_container(container_id)
            self.client.df()
            return
        for call in (
            lambda: self.runtime.ListContainerStats(api.ListContainerStatsRequest(), timeout=120),
            lambda: self.runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=120),
        ):
            self._guard("stats", call)
        self.images.ImageFsInfo(api.ImageFsInfoRequest(), timeout=60)
        running = self.runtime.ListContainers(api.ListContainersRequest(
            filter=api.ContainerFilter(state=api.ContainerStateValue(state=api.CONTAINER_RUNNING))), timeout=60)
        for container in running.containers:
            self.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container.id), timeout=60)

    def churn(self) -> None:
        if self.direct_pods is not None:
            self.direct_pods.remove_oldest_pod()
            self.direct_pods.create(len(self.direct_pods.ids))
        else:
            victim = next(iter(self.pods.sandboxes))
            self.pods.remove(victim)
            self.pods.create(len(self.pods.sandboxes))
        self.churned += 1

    def run(self, seconds: float, churn: bool = True) -> dict:
        """The loops for `seconds`; without `churn`, only the kubelet's polling."""
        pleg = self._start_pleg()
        loops = [(5.0, "status", self.status), (10.0, "sweep", self.sweep)]
        if churn:
            loops.append((2.0, "churn", self.churn))
        threads = [threading.Thread(target=self._every, args=loop, daemon=True) for loop in loops]
        for thread in threads:
            thread.start()
        self.stop.wait(seconds)
        self.stop.set()
        self._finish_pleg(pleg)
        for thread in threads:
            thread.join(timeout=120)
        return {
            "relist": percentiles(self.relist_latencies),
            "pods_churned": self.churned,
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
        }


def measured_run(load: MixedLoad, seconds: float, churn: bool, pids: dict[str, int]) -> dict:
    """One run of the load, with the CPU seconds per minute of each process in `pids` and, through
    the shim, how many RPCs a minute it answered."""
    before, ticks = {name: cpu_seconds(pid) for name, pid in pids.items()}, cpu_ticks()
    stubs = {id(stub): stub for stub in (load.runtime, load.images, load.pods.runtime) if isinstance(stub, CountedStub)}
    calls_before = {key: (stub.calls, stub.inline_calls) for key, stub in stubs.items()}
    result = load.run(seconds, churn=churn)
    result["steal_percent"] = steal_percent(ticks)
    for name, pid in pids.items():
        result[f"{name}_cpu_s_per_min"] = (cpu_seconds(pid) - before[name]) / (seconds / 60)
    if stubs and not load.direct:
        made = sum(stub.calls - calls_before[key][0] for key, stub in stubs.items()) + load.relist_calls
        inline = sum(stub.inline_calls - calls_before[key][1] for key, stub in stubs.items()) + load.relist_calls
        result["rpcs_per_min"] = made / (seconds / 60)
        result["inline_rpcs_per_min"] = inline / (seconds / 60)  # bench/pleg.py's are all inline
    return result


def mixed_phase(runtime: Any, images: Any, client: docker.APIClient, pods: Pods, shim_pid: int, endpoint: str,
                seconds: float) -> dict:
    """The load through the shim, then answered by docker-py; each with churn and without it.

    Without churn, dockerd's CPU is what answering the kubelet's polling costs it; with churn it
    also creates, starts, stops and removes a pod every 2 s, which both ways must do alike.
    """
    daemon = dockerd_pid()
    if daemon is None:
        raise SystemExit("cannot find the dockerd that serves /var/run/docker.sock")
    processes = {"shim": shim_pid, "dockerd": daemon}
    rss_before = rss_bytes(shim_pid)
    result = measured_run(MixedLoad(runtime, images, client, pods, endpoint), seconds, True, processes)
    result["shim_rss_before_mib"] = rss_before / 2**20
    result["shim_rss_after_mib"] = rss_bytes(shim_pid) / 2**20
    result["without_churn"] = measured_run(MixedLoad(runtime, images, client, pods, endpoint), seconds, False, processes)
    churned = DirectPods(client)
    try:
        for index in range(3):
            churned.create(index)
        direct_load = MixedLoad(runtime, images, client, pods, endpoint, direct_pods=churned)
        direct = measured_run(direct_load, seconds, True, {"dockerd": daemon})
        direct_load = MixedLoad(runtime, images, client, pods, endpoint, direct_pods=churned)
        direct["without_churn"] = measured_run(direct_load, seconds, False, {"dockerd": daemon})
    finally:
        churned.remove_all()
    result["direct"] = direct
    for run in (result, direct):  # the pods' own cost to dockerd, the same Docker work both ways
        run["dockerd_ms_per_churned_pod"] = (run["dockerd_cpu_s_per_min"] - run["without_churn"]["dockerd_cpu_s_per_min"]
                                             ) * (seconds / 60) * 1000 / max(run["pods_churned"], 1)
    result["dockerd_cpu_ratio"] = result["dockerd_cpu_s_per_min"] / max(direct["dockerd_cpu_s_per_min"], 1e-9)
    result["dockerd_cpu_ratio_without_churn"] = result["without_churn"]["dockerd_cpu_s_per_min"] / max(
        direct["without_churn"]["dockerd_cpu_s_per_min"], 1e-9)
    return result


def rounds_summary(rounds: list[dict]) -> dict:
    """Each round's headline figures, and their medians.

    floor: the ratio a runtime would reach that cost dockerd nothing but the churned pods' own
    Docker work, done as cheaply as direct Docker does it.
    """
    def figures(mixed: dict) -> dict:
        direct = mixed["direct"]
        return {
            "shim_cpu_s_per_min": mixed["shim_cpu_s_per_min"],
            "dockerd_cpu_s_per_min": mixed["dockerd_cpu_s_per_min"],
            "direct_dockerd_cpu_s_per_min": direct["dockerd_cpu_s_per_min"],
            "dockerd_cpu_ratio": mixed["dockerd_cpu_ratio"],
            "floor": (direct["dockerd_cpu_s_per_min"] - direct["without_churn"]["dockerd_cpu_s_per_min"])
            / max(direct["dockerd_cpu_s_per_min"], 1e-9),
            "dockerd_ms_per_churned_pod": mixed["dockerd_ms_per_churned_pod"],
            "direct_dockerd_ms_per_churned_pod": direct["dockerd_ms_per_churned_pod"],
            "relist_p99_ms": mixed["relist"]["p99"],
            "errors": mixed["errors"],
        }

    each = [figures(mixed) for mixed in rounds]
    medians = {key: statistics.median(round_[key] for round_ in each) for key in each[0]}
    return {"rounds": each, "median": medians}


# --- report -------------------------------------------------------------------------------------


def print_report(report: dict) -> None:
    for pods, run in report["runs"].items():
        print(f"\n== {report['runtime']}: {pods} pods, {2 * int(pods)} containers ==")
        idle = report["idle_memory"]
        print(f"machine: reading back {idle['mib']} MiB took {idle['at_once_ms']:.2f} ms at once, "
              f"{idle['after_idle_ms']:.2f} ms after {idle['idle_seconds']:g} s untouched")
        populate = run["populate"]
        for name in ("RunPodSandbox", "StartContainer"):
            row = populate[name]
            print(f"{name:<20} shim p50 {row['shim']['p50']:8.1f} ms   docker p50 {row['docker']['p50']:8.1f} ms"
                  f"   ratio {row['p50_ratio']:.2f}")
        print(f"\n{'RPC':<20} {'n':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} | {'floor p50':>9} {'p99':>6}"
              f" {'cpu':>5} | {'shim cpu':>8} {'steal':>5} | {'docker p50':>10} {'p99':>7} | {'p99 ratio':>9}")
        for name, row in run["rpcs"].items():
            if row["shim"] == "UNIMPLEMENTED":
                print(f"{name:<20} UNIMPLEMENTED")
                continue
            shim, floor, direct = row["shim"], row["floor"], row["docker"]
            kind = "i" if row["floor_inline"] else " "
            print(f"{name:<20} {shim['n']:5d} {shim['p50']:7.2f} {shim['p95']:7.2f} {shim['p99']:7.2f}"
                  f" {shim['max']:7.2f} | {floor['p50']:8.2f}{kind} {floor['p99']:6.2f} {row['floor_cpu_ms']:5.2f}"
                  f" | {row['shim_cpu_ms']:8.2f}"
                  f" {shim['steal_percent']:4.0f}% | {direct['p50']:10.2f} {direct['p99']:7.2f}"
                  f" | {row['p99_ratio']:9.2f}")
        floor = run["grpc_floor"]
        latency = floor["latency"]
        print(f"(ms. floor: an empty server on the shim's gRPC transport answering a canned {floor['reply_bytes']}-byte PodSandboxStatus"
              f" reply, called after each shim call, on the connection's thread (i) where the shim answers"
              f" the row's calls there, by a worker otherwise; cpu: the floor server's CPU ms a call. All"
              f" {latency['n']} of them: p50 {latency['p50']:.2f}, p99 {latency['p99']:.2f};"
              f" {floor['server_cpu_ms']:.2f} ms of server CPU a call by a worker,"
              f" {floor['inline_server_cpu_ms']:.2f} on the connection's thread. shim cpu: the"
              f" shim's CPU ms a call, from /proc in 10 ms ticks. steal: the share of the machine's CPU time"
              f" its hypervisor gave to others meanwhile)")
        mixed = run.get("mixed")
        if mixed:
            relist = mixed["relist"]
            print(f"\nmixed load {report['mixed_seconds']:.0f}s: relist p50 {relist['p50']:.2f} ms, "
                  f"p99 {relist['p99']:.2f} ms, max {relist['max']:.2f} ms; errors {mixed['errors']}")
            direct, quiet, direct_quiet = mixed["direct"], mixed["without_churn"], mixed["direct"]["without_churn"]
            print(f"  pods churned {mixed['pods_churned']} (direct {direct['pods_churned']}); "
                  f"shim RSS {mixed['shim_rss_before_mib']:.1f} -> {mixed['shim_rss_after_mib']:.1f} MiB")
            print(f"  with churn:    shim CPU {mixed['shim_cpu_s_per_min']:.2f} s/min, dockerd "
                  f"{mixed['dockerd_cpu_s_per_min']:.2f} s/min; direct Docker: dockerd "
                  f"{direct['dockerd_cpu_s_per_min']:.2f} s/min; ratio {mixed['dockerd_cpu_ratio']:.2f}")
            print(f"  without churn: shim CPU {quiet['shim_cpu_s_per_min']:.2f} s/min, dockerd "
                  f"{quiet['dockerd_cpu_s_per_min']:.2f} s/min; direct Docker: dockerd "
                  f"{direct_quiet['dockerd_cpu_s_per_min']:.2f} s/min; ratio "
                  f"{mixed['dockerd_cpu_ratio_without_churn']:.2f}; relist p99 {quiet['relist']['p99']:.2f} ms")
            print(f"  churn alone:   dockerd {mixed['dockerd_ms_per_churned_pod']:.0f} ms a pod through the shim, "
                  f"{direct['dockerd_ms_per_churned_pod']:.0f} ms direct (with churn minus without, over the pods churned)")
            for label, measured in (("with churn:   ", mixed), ("without churn:", quiet)):
                print(f"  {label} {measured['rpcs_per_min']:.0f} RPCs/min; the gRPC floor server would spend "
                      f"{measured['grpc_floor_cpu_s_per_min']:.2f} CPU-s/min on as many calls;"
                      f" CPU stolen {measured['steal_percent']:.0f}%")
        summary = run.get("mixed_rounds")
        if summary:
            print(f"\nmixed rounds ({len(summary['rounds'])}; floor: the ratio if dockerd did only the churned pods' "
                  f"direct work): round  shim CPU  dockerd (direct)  ratio  floor  ms a churned pod, shim / direct")
            for label, figures in [*enumerate(summary["rounds"], 1), ("median", summary["median"])]:
                print(f"  {label!s:>6} {figures['shim_cpu_s_per_min']:8.2f} {figures['dockerd_cpu_s_per_min']:8.2f} "
                      f"({figures['direct_dockerd_cpu_s_per_min']:.2f}) {figures['dockerd_cpu_ratio']:6.2f} "
                      f"{figures['floor']:6.2f}  {figures['dockerd_ms_per_churned_pod']:4.0f} / "
                      f"{figures['direct_dockerd_ms_per_churned_pod']:.0f}")


class RunningRuntime:
    """A CRI runtime someone else started, benched in the shim's place; it is left running."""

    def __init__(self, endpoint: str, pid: int) -> None:
        if not Path(f"/proc/{pid}").is_dir():
            raise SystemExit(f"--runtime-pid {pid}: no such process")
        self.process = types.SimpleNamespace(pid=pid)
        self.dir = tempfile.mkdtemp(prefix="dspy-bench-")
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint.removeprefix("tcp://"))
        grpc.channel_ready_future(self.channel).result(timeout=15)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)

    def stop(self) -> int:
        self.channel.close()
        return 0

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, nargs="+", default=[10, 110], help="pod counts (default 10 110)")
    parser.add_argument("--count", type=int, default=1000,
                        help="calls per RPC row, within --rpc-seconds (default 1000: p99 is then the 10th slowest)")
    parser.add_argument("--rpc-seconds", type=float, default=20.0, help="time cap per RPC row (default 20)")
    parser.add_argument("--mixed-seconds", type=float, default=60.0,
                        help="length of each of the 4 mixed runs; 0 skips them")
    parser.add_argument("--mixed-rounds", type=int, default=1,
                        help="the 4 mixed runs this many times over: dockerd's CPU a churned pod varies by "
                             "10 %% from run to run, so the ratios are also given as the median of the rounds "
                             "(default %(default)s)")
    parser.add_argument("--json", default="bench-results.json", help="where the JSON goes")
    parser.add_argument("--grpc-transport", choices=["http2", "grpcio"], default="http2",
                        help="the shim's --grpc-transport, and the floor server's (default %(default)s)")
    parser.add_argument("--endpoint", help="bench the CRI runtime serving here (unix:///path) instead of starting "
                                           "dockershim-py; it must use the suite's pause image")
    parser.add_argument("--runtime-pid", type=int, help="the process behind --endpoint, measured as the shim is")
    args = parser.parse_args()
    if (args.endpoint is None) != (args.runtime_pid is None):
        parser.error("--endpoint and --runtime-pid go together")

    client = docker.APIClient(version="auto", timeout=300)
    if args.endpoint:
        shim: Shim | RunningRuntime = RunningRuntime(args.endpoint, args.runtime_pid)
    else:  # info: Shim.start waits for the "serving" line
        shim = Shim(["--log-level", "info", "--grpc-transport", args.grpc_transport]).start()
    runtime, images = CountedStub(shim.runtime), CountedStub(shim.images)
    log_root = Path(shim.dir) / "pod-logs"
    report: dict[str, Any] = {"mixed_seconds": args.mixed_seconds, "runtime": args.endpoint or "dockershim-py",
                              "idle_memory": idle_memory_penalty(), "runs": {}}
    try:
        for count in args.pods:
            pods = Pods(runtime, log_root)
            direct = DirectPods(client)
            try:
                for index in range(count):
                    pods.create(index)
                    direct.create(index)
                populate = {
                    name: {
                        "shim": percentiles(shim_samples), "docker": percentiles(docker_samples),
                        "p50_ratio": statistics.median(shim_samples) / statistics.median(docker_samples),
                    }
                    for name, shim_samples, docker_samples in (
                        ("RunPodSandbox", pods.run_latencies, direct.run_latencies),
                        ("StartContainer", pods.start_latencies, direct.start_latencies),
                    )
                }
                direct.remove_all()
                rpcs, floor = rpc_phase(runtime, images, client, pods, shim.process.pid, args.count, args.rpc_seconds,
                                        args.grpc_transport)
                run = {"populate": populate, "rpcs": rpcs, "grpc_floor": floor}
                if args.mixed_seconds > 0:
                    rounds = []
                    for _ in range(max(args.mixed_rounds, 1)):
                        mixed = mixed_phase(runtime, images, client, pods, shim.process.pid, shim.endpoint,
                                            args.mixed_seconds)
                        for measured in (mixed, mixed["without_churn"]):  # what gRPC alone costs at that call rate
                            inline = measured["inline_rpcs_per_min"]
                            measured["grpc_floor_cpu_s_per_min"] = (
                                (measured["rpcs_per_min"] - inline) * floor["server_cpu_ms"]
                                + inline * floor["inline_server_cpu_ms"]) / 1000
                        rounds.append(mixed)
                    run["mixed"] = rounds[0]
                    if len(rounds) > 1:
                        run["mixed_rounds"] = rounds_summary(rounds)
                report["runs"][str(count)] = run
                print_report({**report, "runs": {str(count): run}})  # each size as soon as it is done
                Path(args.json).write_text(json.dumps(report, indent=2))
            finally:
                direct.remove_all()
                pods.remove_all()
    finally:
        if shim.stop() == 0:  # a failed shim keeps its directory, for its log
            shim.remove_files()
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
