"""Latency of dockershim-py's stats RPCs, beside docker-py's one-shot stats for the same containers.

For each pod count N (two busybox containers per pod, made through the shim, each pod under a
cgroup parent of its own as the kubelet gives it):
  cold    the first ListContainerStats and ListPodSandboxStats (every container inspected once);
  warm    p50/p95/p99/max of ListContainerStats, ListPodSandboxStats and ListPodSandboxMetrics
          (no filter), each with the CPU the shim and dockerd spent per call;
  docker  the same 2N containers' one-shot `GET /containers/{id}/stats?stream=0&one-shot=1`
          made as cri-dockerd makes them (NumCPU x 6 in parallel), per sweep of all of them, with
          dockerd's CPU per sweep; the ratio docker sweep / ListContainerStats at p50.
Bounded in count and time per row; it talks only to local unix sockets (the shim, dockerd).
Output: a table on stdout and a JSON file.

    .venv/bin/python bench/stats_bench.py --pods 10 110
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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

from conftest import BUSYBOX, DOCKER_SOCKET, Shim  # noqa: E402  (the suite's shim launcher and images)
from dockershim_py.api import api_pb2 as api  # noqa: E402
from dockershim_py.api import api_pb2_grpc  # noqa: E402
from dockershim_py.cgroup_stats import Mount, pod_cgroup  # noqa: E402
from measure import CLOCK_TICKS, cpu_seconds, dockerd_pid, percentiles  # noqa: E402

# cri-dockerd's ListContainerStats: one-shot stats calls, NumCPU x 6 at a time.
DOCKER_WORKERS = (os.cpu_count() or 1) * 6
POPULATE_WORKERS = 8
# A container that stops at once on SIGTERM (a plain `sleep` as PID 1 would wait out the grace).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait $!"]


# --- measuring ----------------------------------------------------------------------------------


def measure(fn: Callable[[], Any], count: int, seconds: float, pids: dict[str, int | None]) -> dict[str, Any]:
    """Latency percentiles of `fn`, and each process's CPU milliseconds per call."""
    samples: list[float] = []
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    deadline = time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    row: dict[str, Any] = percentiles(samples)
    for name, pid in pids.items():
        row[f"{name}_cpu_ms_per_call"] = (cpu_seconds(pid) - before[name]) * 1000 / max(len(samples), 1)
    return row


# --- the pods -----------------------------------------------------------------------------------


class Population:
    """N pods of two containers each, made through the shim, removed at the end."""

    def __init__(self, runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient, pods: int) -> None:
        self.runtime = runtime
        self.docker = docker_api
        self.namespace = f"dspy-stats-bench-{uuid.uuid4().hex[:8]}"
        self.cgroup_root = f"/dspystatsbench{uuid.uuid4().hex[:8]}"
        self.count = pods
        self.sandboxes: list[str] = []
        self.containers: list[str] = []
        self.cgroup_parents: list[str] = []  # as Docker got them

    def make(self) -> float:
        started = time.monotonic()
        with futures.ThreadPoolExecutor(POPULATE_WORKERS) as pool:
            for sandbox_id, container_ids in pool.map(self._pod, range(self.count)):
                self.sandboxes.append(sandbox_id)
                self.containers += container_ids
        return time.monotonic() - started

    def _pod(self, index: int) -> tuple[str, list[str]]:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=f"pod{index}", namespace=self.namespace, uid=f"{self.namespace}-{index}"),
            labels={"dspy-bench": self.namespace},
            linux=api.LinuxPodSandboxConfig(cgroup_parent=f"{self.cgroup_root}/pod{index}"),
        )
        sandbox_id = self.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        self.cgroup_parents.append(self.docker.inspect_container(sandbox_id)["HostConfig"]["CgroupParent"])
        container_ids = []
        for name in ("app", "sidecar"):
            request = api.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, sandbox_config=config,
                config=api.ContainerConfig(metadata=api.ContainerMetadata(name=name),
                                           image=api.ImageSpec(image=BUSYBOX), command=SLEEPER),
            )
            container_id = self.runtime.CreateContainer(request, timeout=120).container_id
            self.runtime.StartContainer(api.StartContainerRequest(container_id=container_id), timeout=120)
            container_ids.append(container_id)
        return sandbox_id, container_ids

    def remove(self) -> None:
        def remove_one(sandbox_id: str) -> None:
            try:
                self.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
            except grpc.RpcError as exc:
                print(f"RemovePodSandbox {sandbox_id[:12]}: {exc.code().name}: {exc.details()}", file=sys.stderr)

        with futures.ThreadPoolExecutor(POPULATE_WORKERS) as pool:
            list(pool.map(remove_one, self.sandboxes))
        for entry in self.docker.containers(all=True, filters={"name": self.namespace}):  # whatever the shim left
            self.docker.remove_container(entry["Id"], force=True, v=True)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """Docker leaves the empty pod cgroups (and their parent) it made, in every hierarchy."""
        driver = self.docker.info().get("CgroupDriver") or "cgroupfs"
        paths = [pod_cgroup(parent, driver) for parent in self.cgroup_parents]
        paths = [path for path in paths if path]
        paths += sorted({os.path.dirname(path) for path in paths})  # the pods' parent, after them
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if "-" in fields and fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
                mounts.append(Mount(fields[4], fields[3]))
        left = [directory for path in paths for mount in mounts
                if (directory := mount.directory(path)) is not None and os.path.isdir(directory)
                and self.cgroup_root.strip("/") in directory]
        deadline = time.monotonic() + 10  # runc may still be removing the containers' cgroups inside
        while left and time.monotonic() < deadline:
            for directory in list(left):
                try:
                    os.rmdir(directory)
                    left.remove(directory)
                except OSError:
                    pass
            time.sleep(0.2)
        if left:
            print(f"cgroups left behind: {left}", file=sys.stderr)


# --- one pod count ------------------------------------------------------------------------------


def bench(shim: Shim, docker_api: docker.APIClient, pods: int, count: int, seconds: float) -> dict[str, Any]:
    runtime = shim.runtime
    assert shim.process is not None
    pids = {"shim": shim.process.pid, "dockerd": dockerd_pid()}
    population = Population(runtime, docker_api, pods)
    report: dict[str, Any] = {"pods": pods, "containers": 2 * pods}
    try:
        report["populate_seconds"] = population.make()
        list_containers = api.ListContainerStatsRequest()
        list_pods = api.ListPodSandboxStatsRequest()

        started = time.perf_counter()
        reply = runtime.ListContainerStats(list_containers, timeout=120)
        report["cold_list_container_stats_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        runtime.ListPodSandboxStats(list_pods, timeout=120)
        report["cold_list_pod_sandbox_stats_ms"] = (time.perf_counter() - started) * 1000
        ours = set(population.containers)
        report["stats_returned"] = sum(1 for stats in reply.stats if stats.attributes.id in ours)

        rows = report["rows"] = {}
        rows["ListContainerStats"] = measure(
            lambda: runtime.ListContainerStats(list_containers, timeout=120), count, seconds, pids)
        rows["ListPodSandboxStats"] = measure(
            lambda: runtime.ListPodSandboxStats(list_pods, timeout=120), count, seconds, pids)
        rows["ListPodSandboxMetrics"] = measure(
            lambda: runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=120),
            count, seconds, pids)
        one = population.containers[0]
        rows["ContainerStats (one)"] = measure(
            lambda: runtime.ContainerStats(api.ContainerStatsRequest(container_id=one), timeout=120),
            count, seconds, pids)

        with futures.ThreadPoolExecutor(DOCKER_WORKERS) as pool:
            def docker_sweep() -> None:
                list(pool.map(lambda container_id: docker_api.stats(container_id, stream=False, one_shot=True),
                              population.containers))

            rows[f"docker one-shot stats x{2 * pods} ({DOCKER_WORKERS} parallel)"] = measure(
                docker_sweep, count, seconds, pids)
        docker_row = rows[f"docker one-shot stats x{2 * pods} ({DOCKER_WORKERS} parallel)"]
        shim_row = rows["ListContainerStats"]
        if docker_row.get("n") and shim_row.get("n"):
            report["ratio_docker_over_list_container_stats_p50"] = docker_row["p50"] / shim_row["p50"]
            if shim_row["dockerd_cpu_ms_per_call"] > 0:  # else below the clock tick over the whole row
                report["ratio_dockerd_cpu"] = docker_row["dockerd_cpu_ms_per_call"] / shim_row["dockerd_cpu_ms_per_call"]
    finally:
        population.remove()
    return report


def print_report(reports: list[dict[str, Any]]) -> None:
    header = f"{'':48} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9} {'shim cpu':>9} {'dockerd':>9}"
    for report in reports:
        print(f"\n{report['pods']} pods, {report['containers']} containers "
              f"(populated in {report['populate_seconds']:.1f}s; stats returned for "
              f"{report['stats_returned']} of them)")
        print(f"  cold: ListContainerStats {report['cold_list_container_stats_ms']:.1f} ms, "
              f"ListPodSandboxStats {report['cold_list_pod_sandbox_stats_ms']:.1f} ms")
        print(header)
        for name, row in report["rows"].items():
            if not row.get("n"):
                print(f"{name:48} {0:>4}")
                continue
            print(f"{name:48} {row['n']:>4} {row['p50']:>9.1f} {row['p95']:>9.1f} {row['p99']:>9.1f} "
                  f"{row['max']:>9.1f} {row['shim_cpu_ms_per_call']:>9.1f} {row['dockerd_cpu_ms_per_call']:>9.1f}")
        if "ratio_docker_over_list_container_stats_p50" in report:
            dockerd = (f"{report['ratio_dockerd_cpu']:.1f}x" if "ratio_dockerd_cpu" in report
                       else "n/a (the shim's calls cost dockerd less than one clock tick in all)")
            print(f"  docker one-shot sweep / ListContainerStats, p50 latency: "
                  f"{report['ratio_docker_over_list_container_stats_p50']:.1f}x; dockerd CPU per call: {dockerd}")
    print(f"\n(cpu columns: CPU milliseconds per call of the shim process and of dockerd, from /proc in "
          f"{1000 // CLOCK_TICKS} ms ticks; dockerd's includes whatever else uses it meanwhile)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, nargs="+", default=[10, 110], help="pod counts (default 10 110)")
    parser.add_argument("--count", type=int, default=50, help="calls per row (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap per row (default 30)")
    parser.add_argument("--json", default="stats-bench-results.json", help="where the JSON goes")
    args = parser.parse_args()
    if any(pods < 1 or pods > 500 for pods in args.pods):
        parser.error("--pods must be between 1 and 500")

    docker_api = docker.APIClient(base_url=DOCKER_SOCKET, version="auto", timeout=120)
    shim = Shim(["--log-level", "info"]).start()
    reports = []
    try:
        for pods in args.pods:
            reports.append(bench(shim, docker_api, pods, args.count, args.seconds))
    finally:
        shim.stop()
        problems = [line for line in shim.log().splitlines() if " WARNING " in line or " ERROR " in line]
        shim.remove_files()
    Path(args.json).write_text(json.dumps({"runs": reports, "shim_log_problems": problems}, indent=2))
    print_report(reports)
    print(f"\nshim log: {len(problems)} warnings or errors" + "".join(f"\n  {line}" for line in problems[:5]))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
