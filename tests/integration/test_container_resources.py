"""Container resources as the container's cgroups (v1 here) and /proc see them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import host_has_capability
from containers_fixtures import Pod, pod  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api

CGROUP_V1 = Path("/sys/fs/cgroup/memory").is_dir()


@pytest.mark.skipif(not CGROUP_V1, reason="reads cgroup v1 files")
def test_resources_in_the_cgroup(pod: Pod) -> None:
    resources = api.LinuxContainerResources(
        cpu_period=50000, cpu_quota=25000, cpu_shares=256, memory_limit_in_bytes=96 << 20, oom_score_adj=500,
        cpuset_cpus="0", cpuset_mems="0", hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=0)],
    )
    container_id = pod.run("limited", linux=api.LinuxContainerConfig(resources=resources))
    script = ("cd /sys/fs/cgroup; cat cpu/cpu.cfs_period_us cpu/cpu.cfs_quota_us cpu/cpu.shares "
              "memory/memory.limit_in_bytes cpuset/cpuset.cpus cpuset/cpuset.mems /proc/self/oom_score_adj")
    assert pod.sh(container_id, script).split() == ["50000", "25000", "256", str(96 << 20), "0", "0", "500"]
    if Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists():  # swap accounting on: swap off
        assert pod.sh(container_id, "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").strip() == str(96 << 20)
    status = pod.status(container_id).resources.linux
    assert (status.cpu_period, status.cpu_quota, status.cpu_shares, status.memory_limit_in_bytes,
            status.oom_score_adj, status.cpuset_cpus) == (50000, 25000, 256, 96 << 20, 500, "0")
    pod.remove(container_id)


def test_an_update_with_cpu_quota_minus_one_takes_the_quota_off(pod: Pod) -> None:
    """The kubelet's CPU manager sends -1 for a container it gives whole CPUs (as `docker update` takes it)."""
    container_id = pod.run("quota", linux=api.LinuxContainerConfig(resources=api.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000)))
    pod.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(
        container_id=container_id, linux=api.LinuxContainerResources(cpu_period=100000, cpu_quota=-1)), timeout=30)
    assert pod.sh(container_id, "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us").strip() == "-1"
    assert pod.status(container_id).resources.linux.cpu_quota == -1
    pod.remove(container_id)


def test_unlimited_swap_and_a_real_time_stop_signal_are_taken_and_read_back(pod: Pod) -> None:
    """The kubelet's UnlimitedSwap asks swap -1; the CRI names SIGRTMINPLUS1 what Docker calls SIGRTMIN+1."""
    resources = api.LinuxContainerResources(memory_limit_in_bytes=96 << 20, memory_swap_limit_in_bytes=-1)
    container_id = pod.run("swapping", linux=api.LinuxContainerConfig(resources=resources),
                           stop_signal=api.SIGRTMINPLUS1)
    status = pod.status(container_id)
    assert status.resources.linux.memory_swap_limit_in_bytes == -1
    assert status.stop_signal == api.SIGRTMINPLUS1
    if Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists():
        assert int(pod.sh(container_id, "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")) > 96 << 20
    pod.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(
        container_id=container_id, linux=api.LinuxContainerResources(memory_limit_in_bytes=128 << 20,
                                                                     memory_swap_limit_in_bytes=-1)), timeout=30)
    assert pod.status(container_id).resources.linux.memory_limit_in_bytes == 128 << 20
    pod.remove(container_id)


def test_negative_oom_score_adj(pod: Pod) -> None:
    """runc cannot lower OOM scores without CAP_SYS_RESOURCE: such nodes get 0 instead of a failure."""
    container_id = pod.run("favoured", linux=api.LinuxContainerConfig(
        resources=api.LinuxContainerResources(oom_score_adj=-500)))
    expected = "-500" if host_has_capability(24) else "0"
    assert pod.sh(container_id, "cat /proc/self/oom_score_adj").strip() == expected
    pod.remove(container_id)


def test_shm_is_64_mib(pod: Pod) -> None:
    container_id = pod.run("shm")
    assert pod.sh(container_id, "df -k /dev/shm | tail -1").split()[1] == "65536"
    pod.remove(container_id)
