"""Cgroup layouts, container cgroup paths for both drivers, and the v1/v2 file parsers, checked
against fake cgroup trees in temporary directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockershim_py.cgroup_stats import (
    UNLIMITED,
    CgroupDirs,
    CgroupGone,
    CgroupLayout,
    CgroupReader,
    CgroupSample,
    CpuRates,
    DeviceIo,
    Mount,
    Pressure,
    ProcessCounts,
    ProcessFiles,
    Stall,
    block_io,
    cgroup_dirs,
    combined,
    container_cgroup,
    count_open_files,
    cfs_quota,
    cpu_max_period,
    cpu_max_quota,
    cpu_weight_to_shares,
    expand_slice,
    parse_blkio_v1,
    parse_device_name,
    parse_io_stat,
    parse_keyed,
    parse_limit,
    parse_mountinfo,
    parse_net_dev,
    parse_pids,
    parse_pressure,
    parse_proc_cgroup,
    parse_start_time,
    pod_cgroup,
    same_path,
    sample_v1,
    sample_v2,
)

CID = "a" * 64
SECOND = 1_000_000_000

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# systemd hosts co-mount cpu and cpuacct.
COMOUNTED_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
"""
UNIFIED_MOUNTINFO = """\
22 1 0:21 / / rw - ext4 /dev/sda1 rw
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""

V1_MEMORY_STAT = """\
cache 290816
rss 122880
total_cache 1290816
total_rss 70000000
total_mapped_file 151552
total_inactive_file 1000000
total_active_file 290816
total_pgfault 1074
total_pgmajfault 5
"""
V2_MEMORY_STAT = """\
anon 70000000
file 1290816
file_mapped 151552
inactive_file 1000000
active_file 290816
pgfault 1074
pgmajfault 5
"""
V2_CPU_STAT = """\
usage_usec 2500000
user_usec 2000000
system_usec 500000
nr_periods 10
nr_throttled 2
throttled_usec 3000000
"""


# --- layouts ------------------------------------------------------------------------------------


def test_hybrid_host_counts_as_v1_with_a_mount_per_controller() -> None:
    layout = parse_mountinfo(HYBRID_MOUNTINFO)
    assert layout.version == 1
    assert layout.mounts["memory"] == Mount("/sys/fs/cgroup/memory", "/")
    assert layout.mounts["cpuacct"].point == "/sys/fs/cgroup/cpuacct"
    assert set(layout.mounts) == {"cpu", "cpuacct", "memory", "pids", "blkio"}
    assert layout.hybrid_unified == Mount("/sys/fs/cgroup/unified", "/")  # for its pressure files


def test_comounted_cpu_and_cpuacct_share_a_mount() -> None:
    layout = parse_mountinfo(COMOUNTED_MOUNTINFO)
    assert layout.mounts["cpu"] == layout.mounts["cpuacct"] == Mount("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert "pids" not in layout.mounts


def test_unified_host_is_v2() -> None:
    layout = parse_mountinfo(UNIFIED_MOUNTINFO)
    assert layout == CgroupLayout(2, {"": Mount("/sys/fs/cgroup", "/")})


def test_no_cgroups_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_mountinfo("22 1 0:21 / / rw - ext4 /dev/sda1 rw\n")


def test_mount_maps_hierarchy_paths_below_its_root() -> None:
    assert Mount("/sys/fs/cgroup", "/").directory("/docker/x") == "/sys/fs/cgroup/docker/x"
    assert Mount("/sys/fs/cgroup", "/").directory("/") == "/sys/fs/cgroup"
    nested = Mount("/sys/fs/cgroup", "/kubepods/pod1")  # a mount of a sub-cgroup (cgroup namespace)
    assert nested.directory("/kubepods/pod1/c1") == "/sys/fs/cgroup/c1"
    assert nested.directory("/kubepods/pod1") == "/sys/fs/cgroup"
    assert nested.directory("/kubepods/pod2/c1") is None
    assert nested.directory("/kubepods/pod10") is None


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, path", [
    ("system.slice", "/system.slice"),
    ("kubepods.slice", "/kubepods.slice"),
    ("kubepods-burstable-pod12_34.slice",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"),
    ("-.slice", "/"),
])
def test_expand_slice(name: str, path: str) -> None:
    assert expand_slice(name) == path


@pytest.mark.parametrize("name", ["kubepods", "a--b.slice", "-a.slice", "a-.slice", "/kubepods.slice", ".slice"])
def test_expand_slice_refuses_non_slices(name: str) -> None:
    with pytest.raises(ValueError):
        expand_slice(name)


@pytest.mark.parametrize("parent, driver, path", [
    ("", "cgroupfs", f"/docker/{CID}"),
    ("/kubepods/burstable/pod1", "cgroupfs", f"/kubepods/burstable/pod1/{CID}"),
    ("kubepods/pod1/", "cgroupfs", f"/kubepods/pod1/{CID}"),
    ("/", "cgroupfs", f"/{CID}"),
    ("", "systemd", f"/system.slice/docker-{CID}.scope"),
    ("kubepods-besteffort-pod1.slice", "systemd",
     f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/docker-{CID}.scope"),
])
def test_container_cgroup(parent: str, driver: str, path: str) -> None:
    assert container_cgroup(CID, parent, driver) == path


def test_pod_cgroup_only_with_a_parent() -> None:
    assert pod_cgroup("", "cgroupfs") is None
    assert pod_cgroup("", "systemd") is None
    assert pod_cgroup("/kubepods/besteffort/pod1", "cgroupfs") == "/kubepods/besteffort/pod1"
    assert pod_cgroup("kubepods-pod1.slice", "systemd") == "/kubepods.slice/kubepods-pod1.slice"


def test_proc_cgroup_v1_and_v2_lines() -> None:
    text = (
        "12:pids:/docker/x\n4:memory:/docker/x\n2:cpu,cpuacct:/docker/x\n"
        "1:name=systemd:/docker/x\n0::/docker/x\n"
    )
    paths = parse_proc_cgroup(text)
    assert paths["memory"] == paths["cpu"] == paths["cpuacct"] == paths["pids"] == "/docker/x"
    assert paths[""] == "/docker/x"
    assert "name=systemd" in paths


def test_cgroup_dirs_per_controller_and_unified() -> None:
    v1 = parse_mountinfo(HYBRID_MOUNTINFO)
    dirs = cgroup_dirs(v1, same_path(v1, "/docker/x"))
    assert dirs == CgroupDirs(1, "/sys/fs/cgroup/cpu/docker/x", "/sys/fs/cgroup/cpuacct/docker/x",
                              "/sys/fs/cgroup/memory/docker/x", "/sys/fs/cgroup/pids/docker/x",
                              "/sys/fs/cgroup/blkio/docker/x", "/sys/fs/cgroup/unified/docker/x")
    v2 = parse_mountinfo(UNIFIED_MOUNTINFO)
    dirs = cgroup_dirs(v2, {"": "/system.slice/docker-x.scope"})
    assert {dirs.cpu, dirs.cpuacct, dirs.memory, dirs.pids, dirs.blkio, dirs.pressure} == {
        "/sys/fs/cgroup/system.slice/docker-x.scope"}


def test_pure_v1_host_has_no_pressure_directory() -> None:
    v1 = parse_mountinfo("\n".join(line for line in HYBRID_MOUNTINFO.splitlines() if "cgroup2" not in line))
    assert v1.hybrid_unified is None
    assert cgroup_dirs(v1, same_path(v1, "/docker/x")).pressure is None
    # a container's own /proc/<pid>/cgroup may name a v2 path; without the mount there is no directory
    assert cgroup_dirs(v1, {"memory": "/docker/x", "": "/docker/x"}).pressure is None


# --- parsers ----------------------------------------------------------------------------------------


def test_parse_keyed_skips_odd_lines() -> None:
    assert parse_keyed("a 1\nb two\n\nc 3 4\nd -5\n") == {"a": 1, "d": -5}


@pytest.mark.parametrize("text, limit", [
    ("max\n", None), ("9223372036854771712\n", None), (f"{UNLIMITED}\n", None), ("67108864\n", 64 << 20),
])
def test_parse_limit(text: str, limit: int | None) -> None:
    assert parse_limit(text) == limit


def v1_files(**overrides: str) -> dict[str, str]:
    files = {
        "cpuacct.usage": "2500000000\n",
        "memory.usage_in_bytes": "80000000\n",
        "memory.stat": V1_MEMORY_STAT,
        "memory.limit_in_bytes": "9223372036854771712\n",
        "pids.current": "3\n",
    }
    files.update(overrides)
    return files


def test_v1_sample_working_set_is_usage_minus_inactive_file() -> None:
    sample = sample_v1(v1_files(), clock_ticks=100)
    assert sample.cpu_usage_ns == 2_500_000_000
    assert sample.memory_usage == 80_000_000
    assert sample.memory_working_set == 79_000_000
    assert sample.memory_rss == 70_000_000
    assert (sample.page_faults, sample.major_page_faults) == (1074, 5)
    assert sample.memory_limit is None and sample.memory_available is None
    assert sample.swap_usage is None  # no swap accounting files
    assert sample.tasks == 3
    assert sample.memory_cache == 1_290_816 and sample.memory_mapped_file == 151_552


def test_v1_sample_with_limit_swap_and_detail() -> None:
    sample = sample_v1(v1_files(**{
        "memory.limit_in_bytes": "100000000\n",
        "memory.memsw.usage_in_bytes": "90000000\n",
        "memory.memsw.limit_in_bytes": "150000000\n",
        "cpuacct.stat": "user 200\nsystem 50\n",
        "cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 3000000000\n",
        "memory.max_usage_in_bytes": "95000000\n",
        "memory.failcnt": "7\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    }), clock_ticks=100)
    assert sample.memory_available == 21_000_000
    assert sample.swap_usage == 10_000_000 and sample.swap_limit == 50_000_000
    assert sample.swap_available == 40_000_000
    assert (sample.cpu_user_ns, sample.cpu_system_ns) == (2 * SECOND, SECOND // 2)
    assert (sample.cfs_periods, sample.cfs_throttled_periods, sample.cfs_throttled_ns) == (10, 2, 3 * SECOND)
    assert (sample.memory_max_usage, sample.memory_failcnt, sample.oom_kills) == (95_000_000, 7, 1)


def test_v1_swap_without_a_memsw_limit_has_no_available_swap() -> None:
    sample = sample_v1(v1_files(**{"memory.memsw.usage_in_bytes": "80000000\n",
                                    "memory.memsw.limit_in_bytes": "9223372036854771712\n"}), clock_ticks=100)
    assert sample.swap_usage == 0 and sample.swap_available is None


V1_IO_SERVICE_BYTES = """\
8:0 Read 4096
8:0 Write 8192
8:0 Sync 12288
8:0 Async 0
8:0 Discard 0
8:0 Total 12288
254:16 Read 512
254:16 Write 0
Total 12800
"""
V1_IO_SERVICED = """\
8:0 Read 1
8:0 Write 2
8:0 Total 3
254:16 Read 1
Total 4
"""
DEVICE_NAMES = {(8, 0): "/dev/sda", (254, 16): "/dev/vdb"}


def name_device(major: int, minor: int) -> str:
    return DEVICE_NAMES.get((major, minor), "")


def test_parse_blkio_v1_per_device_without_the_total() -> None:
    devices = parse_blkio_v1(V1_IO_SERVICE_BYTES)
    assert set(devices) == {(8, 0), (254, 16)}
    assert devices[(8, 0)] == {"Read": 4096, "Write": 8192, "Sync": 12288, "Async": 0, "Discard": 0, "Total": 12288}
    assert parse_blkio_v1("Total 0\n") == {}  # no I/O yet
    assert parse_blkio_v1("x:0 Read 1\n8:0 Read many\n") == {}


def test_parse_io_stat_as_v1_operations() -> None:
    service_bytes, serviced = parse_io_stat(
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n254:16 rbytes=512 rios=1 odd\n")
    assert service_bytes == {(8, 0): {"Read": 4096, "Write": 8192, "Discard": 0}, (254, 16): {"Read": 512}}
    assert serviced == {(8, 0): {"Read": 1, "Write": 2, "Discard": 0}, (254, 16): {"Read": 1}}
    assert parse_io_stat("") == ({}, {})


def test_block_io_names_every_device() -> None:
    devices = block_io({(8, 0): {"Read": 1}}, {(8, 0): {"Read": 2}, (9, 1): {"Write": 3}}, name_device)
    assert devices == (DeviceIo(8, 0, "/dev/sda", {"Read": 1}, {"Read": 2}), DeviceIo(9, 1, "", {}, {"Write": 3}))


def test_cpu_max_and_weight() -> None:
    assert cpu_max_period("max 100000\n") == 100_000
    assert cpu_max_period("20000 50000\n") == 50_000
    with pytest.raises(ValueError):
        cpu_max_period("max\n")
    assert (cpu_max_quota("max 100000\n"), cpu_max_quota("20000 50000\n")) == (None, 20_000)
    assert (cfs_quota("-1\n"), cfs_quota("25000\n")) == (None, 25_000)
    # runc maps shares 2, 1024 and 262144 to weights 1, 39 and 10000: the inverse, as cAdvisor does.
    assert [cpu_weight_to_shares(weight) for weight in (1, 39, 100, 10000)] == [2, 998, 2597, 262144]


def test_device_name_from_uevent() -> None:
    assert parse_device_name("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n") == "/dev/vda"
    assert parse_device_name("MAJOR=254\nMINOR=0\n") == ""


def test_v1_sample_metrics_detail() -> None:
    sample = sample_v1(v1_files(**{
        "memory.stat": V1_MEMORY_STAT + "pgfault 600\npgmajfault 2\n",
        "memory.limit_in_bytes": "67108864\n",
        "memory.memsw.usage_in_bytes": "70000000\n",
        "memory.memsw.limit_in_bytes": "134217728\n",
        "memory.kmem.usage_in_bytes": "417792\n",
        "cpu.cfs_period_us": "100000\n",
        "cpu.cfs_quota_us": "25000\n",
        "cpu.shares": "512\n",
        "pids.max": "max\n",
        "blkio.throttle.io_service_bytes_recursive": V1_IO_SERVICE_BYTES,
        "blkio.throttle.io_serviced_recursive": V1_IO_SERVICED,
    }), clock_ticks=100, device_name=name_device)
    assert sample.memory_kernel == 417_792
    assert (sample.local_page_faults, sample.local_major_page_faults) == (600, 2)
    assert (sample.page_faults, sample.major_page_faults) == (1074, 5)  # the hierarchy's
    assert sample.memory_swap_limit == 128 << 20  # memory plus swap, as v1 and Docker say
    assert (sample.cpu_period_us, sample.cpu_quota_us, sample.cpu_shares, sample.pids_limit) == (
        100_000, 25_000, 512, None)
    assert [(device.device, device.service_bytes["Write"], device.serviced.get("Write"))
            for device in sample.block_io] == [("/dev/sda", 8192, 2), ("/dev/vdb", 0, None)]


def test_v1_sample_without_metrics_files_leaves_them_unknown() -> None:
    sample = sample_v1(v1_files(), clock_ticks=100)
    assert (sample.memory_kernel, sample.local_page_faults, sample.memory_swap_limit) == (None, None, None)
    assert (sample.cpu_period_us, sample.cpu_shares, sample.pids_limit, sample.block_io) == (None, None, None, ())


def test_working_set_never_negative() -> None:
    sample = sample_v1(v1_files(**{"memory.usage_in_bytes": "500000\n"}), clock_ticks=100)
    assert sample.memory_working_set == 0


def v2_files(**overrides: str) -> dict[str, str]:
    files = {
        "cpu.stat": V2_CPU_STAT,
        "memory.current": "80000000\n",
        "memory.stat": V2_MEMORY_STAT,
        "memory.max": "max\n",
        "memory.swap.current": "4096\n",
        "memory.swap.max": "max\n",
        "pids.current": "2\n",
    }
    files.update(overrides)
    return files


def test_v2_sample() -> None:
    sample = sample_v2(v2_files())
    assert sample.cpu_usage_ns == 2_500_000_000
    assert (sample.cpu_user_ns, sample.cpu_system_ns, sample.cfs_throttled_ns) == (2 * SECOND, SECOND // 2, 3 * SECOND)
    assert sample.memory_working_set == 79_000_000
    assert sample.memory_rss == 70_000_000  # anon
    assert (sample.page_faults, sample.major_page_faults) == (1074, 5)
    assert sample.memory_limit is None and sample.memory_available is None
    assert sample.swap_usage == 4096 and sample.swap_available is None
    assert sample.tasks == 2


def test_v2_sample_with_limits_and_detail() -> None:
    sample = sample_v2(v2_files(**{
        "memory.max": "100000000\n", "memory.swap.max": "8192\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "memory.peak": "95000000\n",
    }))
    assert sample.memory_available == 21_000_000
    assert sample.swap_available == 4096
    assert (sample.oom_kills, sample.memory_max_usage, sample.memory_failcnt) == (1, 95_000_000, None)


def test_v2_sample_metrics_detail() -> None:
    sample = sample_v2(v2_files(**{
        "memory.stat": V2_MEMORY_STAT + "kernel 708608\n",
        "memory.max": "67108864\n", "memory.swap.max": "67108864\n",
        "cpu.max": "50000 100000\n", "cpu.weight": "39\n", "pids.max": "1024\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    }), device_name=name_device)
    assert sample.memory_kernel == 708_608
    assert (sample.local_page_faults, sample.local_major_page_faults) == (1074, 5)  # v2 counts the hierarchy
    assert sample.memory_swap_limit == 128 << 20  # swap alone in v2: the memory limit added
    assert (sample.cpu_period_us, sample.cpu_shares, sample.pids_limit) == (100_000, 998, 1024)
    assert sample.block_io == (DeviceIo(8, 0, "/dev/sda", {"Read": 4096, "Write": 8192, "Discard": 0},
                                        {"Read": 1, "Write": 2, "Discard": 0}),)


def test_v2_swap_limit_is_unlimited_when_either_limit_is() -> None:
    assert sample_v2(v2_files(**{"memory.max": "67108864\n"})).memory_swap_limit is None
    assert sample_v2(v2_files(**{"memory.swap.max": "0\n"})).memory_swap_limit is None
    assert sample_v2(v2_files(**{"memory.max": "67108864\n", "memory.swap.max": "0\n"})).memory_swap_limit == 64 << 20


def test_combined_sums_and_has_no_limit() -> None:
    one = sample_v2(v2_files(**{"memory.max": "100000000\n"}))
    total = combined([one, one])
    assert total is not None
    assert total.cpu_usage_ns == 2 * one.cpu_usage_ns
    assert total.memory_working_set == 2 * one.memory_working_set
    assert total.tasks == 4
    assert total.memory_limit is None
    assert combined([]) is None


# --- the reader on fake trees -----------------------------------------------------------------------


def write_tree(base: Path, files: dict[str, str]) -> str:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)
    return str(base)


def v1_tree(root: Path, cgroup: str, files: dict[str, str]) -> CgroupLayout:
    """A fake v1 host: a directory per controller, each holding `cgroup` with its files."""
    by_controller = {"cpuacct": ("cpuacct.",), "cpu": ("cpu.",), "memory": ("memory.", "cgroup.procs"),
                     "pids": ("pids.",), "blkio": ("blkio.",)}
    for controller, prefixes in by_controller.items():
        write_tree(root / controller / cgroup.strip("/"),
                   {name: text for name, text in files.items() if name.startswith(prefixes)})
    return CgroupLayout(1, {controller: Mount(str(root / controller), "/") for controller in by_controller})


def test_reader_locates_and_reads_a_cgroupfs_v1_container(tmp_path: Path) -> None:
    layout = v1_tree(tmp_path, f"/kubepods/pod1/{CID}", v1_files(**{"cpu.stat": "nr_periods 4\n"}))
    reader = CgroupReader(layout, proc_root=str(tmp_path / "proc"))
    found = reader.locate(CID, "/kubepods/pod1", "cgroupfs", pid=0)
    assert found is not None
    path, dirs = found
    assert path == f"/kubepods/pod1/{CID}"
    assert dirs.memory == str(tmp_path / "memory" / "kubepods" / "pod1" / CID)
    sample = reader.read(dirs)
    assert sample.memory_working_set == 79_000_000 and sample.tasks == 3
    assert sample.cfs_periods is None  # cpu.stat is read for metrics only
    assert reader.read(dirs, detailed=True).cfs_periods == 4
    assert reader.locate_pod("/kubepods/pod1", "cgroupfs") == (
        "/kubepods/pod1", cgroup_dirs(layout, same_path(layout, "/kubepods/pod1")))


def test_reader_locates_a_systemd_v2_container(tmp_path: Path) -> None:
    cgroup = f"kubepods.slice/kubepods-pod1.slice/docker-{CID}.scope"
    write_tree(tmp_path / cgroup, v2_files())
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tmp_path), "/")}))
    found = reader.locate(CID, "kubepods-pod1.slice", "systemd", pid=0)
    assert found is not None and found[0] == "/" + cgroup
    assert reader.read(found[1]).memory_rss == 70_000_000
    pod = reader.locate_pod("kubepods-pod1.slice", "systemd")
    assert pod is not None and pod[0] == "/kubepods.slice/kubepods-pod1.slice"


def test_reader_falls_back_to_the_init_process_cgroup(tmp_path: Path) -> None:
    """dockerd started with its own --cgroup-parent: the path is not where the driver puts it."""
    write_tree(tmp_path / "cg" / "custom" / CID, v2_files())
    write_tree(tmp_path / "proc" / "42", {"cgroup": f"0::/custom/{CID}\n"})
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tmp_path / "cg"), "/")}), proc_root=str(tmp_path / "proc"))
    found = reader.locate(CID, "", "cgroupfs", pid=42)
    assert found is not None and found[0] == f"/custom/{CID}"
    assert reader.locate(CID, "", "cgroupfs", pid=43) is None  # no such process
    assert reader.locate(CID, "", "cgroupfs", pid=0) is None


def test_reader_raises_cgroup_gone_when_the_cgroup_disappears(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "c", v2_files())
    dirs = CgroupDirs(2, base, base, base, base)
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tmp_path), "/")}))
    os.remove(os.path.join(base, "pids.current"))  # optional: still readable
    assert reader.read(dirs).tasks is None
    os.remove(os.path.join(base, "memory.current"))
    with pytest.raises(CgroupGone):
        reader.read(dirs)
    with pytest.raises(CgroupGone):
        reader.read(CgroupDirs(1, None, None, None, None))


def test_reader_reads_metrics_files_from_each_v1_hierarchy(tmp_path: Path) -> None:
    layout = v1_tree(tmp_path / "cg", "/docker/x", v1_files(**{
        "cpu.shares": "512\n", "pids.max": "100\n", "memory.kmem.usage_in_bytes": "4096\n",
        "blkio.throttle.io_service_bytes_recursive": V1_IO_SERVICE_BYTES,
        "blkio.throttle.io_serviced_recursive": V1_IO_SERVICED,
    }))
    write_tree(tmp_path / "sys" / "dev" / "block" / "8:0", {"uevent": "MAJOR=8\nMINOR=0\nDEVNAME=sda\n"})
    reader = CgroupReader(layout, sys_root=str(tmp_path / "sys"))
    dirs = cgroup_dirs(layout, same_path(layout, "/docker/x"))
    assert reader.read(dirs).block_io == ()  # metrics only
    sample = reader.read(dirs, detailed=True)
    assert (sample.cpu_shares, sample.pids_limit, sample.memory_kernel) == (512, 100, 4096)
    assert [(device.major, device.minor, device.device) for device in sample.block_io] == [
        (8, 0, "/dev/sda"), (254, 16, "")]  # sysfs does not name 254:16


CPU_PRESSURE = """\
some avg10=17.02 avg60=3.07 avg300=0.64 total=3022525
full avg10=0.18 avg60=0.03 avg300=0.00 total=36721
"""


def test_parse_pressure() -> None:
    assert parse_pressure(CPU_PRESSURE) == Pressure(Stall(17.02, 3.07, 0.64, 3022525), Stall(0.18, 0.03, 0.0, 36721))
    # CPU before Linux 5.13: no full line
    assert parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n") == Pressure(
        Stall(0.0, 0.0, 0.0, 5), None)
    # a field added by a later kernel is passed over; a broken line is dropped, not fatal
    assert parse_pressure("some avg10=1.00 avg60=2.00 avg300=3.00 total=7 extra=1\nfull avg10=x\n") == Pressure(
        Stall(1.0, 2.0, 3.0, 7), None)
    assert parse_pressure("") is None
    assert parse_pressure("some avg10=0.00 total=\n") is None  # cut short
    assert parse_pressure("some avg10=1.0. avg60=1 avg300=1 total=1\nfull avg10=1 avg60=1 avg300=1 total=1x\n") is None


def test_reader_reads_pressure_from_the_unified_hierarchy_of_a_hybrid_host(tmp_path: Path) -> None:
    layout = v1_tree(tmp_path / "cg", "/docker/x", v1_files())
    layout = CgroupLayout(1, layout.mounts, Mount(str(tmp_path / "cg" / "unified"), "/"))
    dirs = cgroup_dirs(layout, same_path(layout, "/docker/x"))
    assert CgroupReader(layout).read(dirs).cpu_pressure is None  # no directory there: no PSI, the rest as ever
    write_tree(tmp_path / "cg" / "unified" / "docker" / "x",
               {"cpu.pressure": CPU_PRESSURE, "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=4\n"})
    sample = CgroupReader(layout).read(dirs)
    assert sample.cpu_pressure is not None and sample.cpu_pressure.some == Stall(17.02, 3.07, 0.64, 3022525)
    assert sample.memory_pressure == Pressure(Stall(0.0, 0.0, 0.0, 9), Stall(0.0, 0.0, 0.0, 4))
    assert sample.io_pressure is None  # no io.pressure file
    assert sample.memory_working_set == 79_000_000  # the v1 figures as before


def test_reader_reads_pressure_beside_the_v2_files(tmp_path: Path) -> None:
    write_tree(tmp_path / "c", {**v2_files(), "io.pressure": CPU_PRESSURE})
    layout = CgroupLayout(2, {"": Mount(str(tmp_path), "/")})
    sample = CgroupReader(layout).read(cgroup_dirs(layout, {"": "/c"}))
    assert sample.io_pressure is not None and sample.io_pressure.full == Stall(0.18, 0.03, 0.0, 36721)
    assert sample.cpu_pressure is None


def test_parse_pids() -> None:
    assert parse_pids("1\n42\n") == [1, 42]
    assert parse_pids("") == []


def fake_process(proc: Path, pid: int, targets: list[str]) -> None:
    """/proc/<pid>/fd with one symbolic link per descriptor, as the kernel shows them."""
    fd = proc / str(pid) / "fd"
    fd.mkdir(parents=True)
    for number, target in enumerate(targets):
        os.symlink(target, fd / str(number))


def test_count_open_files(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, ["/dev/null", "pipe:[1]", "socket:[2]"])
    fake_process(tmp_path, 11, ["socket:[3]", "anon_inode:[eventfd]"])
    assert count_open_files(str(tmp_path), [10, 11, 12], limit=100) == (5, 2)  # 12 has exited
    assert count_open_files(str(tmp_path), [10, 11], limit=5) == (5, 2)
    assert count_open_files(str(tmp_path), [10, 11], limit=4) is None  # too many: not understated
    assert count_open_files(str(tmp_path), [], limit=4) == (0, 0)


def test_reader_counts_the_processes_of_a_cgroup(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "cg" / "c", {**v2_files(), "cgroup.procs": "10\n11\n"})
    fake_process(tmp_path / "proc", 10, ["/dev/null", "/dev/null", "/dev/null", "socket:[7]"])
    fake_process(tmp_path / "proc", 11, [])
    reader = CgroupReader(CgroupLayout(2, {"": Mount(str(tmp_path / "cg"), "/")}), proc_root=str(tmp_path / "proc"))
    dirs = CgroupDirs(2, base, base, base, base, base)
    assert reader.processes(dirs) == ProcessCounts(processes=2, file_descriptors=4, sockets=1)
    os.remove(os.path.join(base, "cgroup.procs"))
    with pytest.raises(CgroupGone):
        reader.processes(dirs)


def test_reader_counts_processes_in_the_v1_memory_hierarchy(tmp_path: Path) -> None:
    layout = v1_tree(tmp_path / "cg", "/docker/x", v1_files(**{"cgroup.procs": "10\n"}))
    fake_process(tmp_path / "proc", 10, ["socket:[1]"])
    reader = CgroupReader(layout, proc_root=str(tmp_path / "proc"))
    assert reader.processes(cgroup_dirs(layout, same_path(layout, "/docker/x"))) == ProcessCounts(1, 1, 1)


def test_reader_tolerates_v1_without_swap_accounting_or_pids(tmp_path: Path) -> None:
    files = v1_files()
    del files["pids.current"]
    layout = v1_tree(tmp_path, "/docker/x", files)
    reader = CgroupReader(layout)
    sample = reader.read(cgroup_dirs(layout, same_path(layout, "/docker/x")))
    assert sample.swap_usage is None and sample.tasks is None


# --- CPU rate ---------------------------------------------------------------------------------------


def test_cpu_rate_needs_two_samples_a_window_apart() -> None:
    rates = CpuRates(min_window_ns=SECOND)
    assert rates.rate("c", 0, 10 * SECOND) is None  # first sample
    assert rates.rate("c", SECOND // 10, 10 * SECOND + SECOND // 10) is None  # too close, no rate yet
    assert rates.rate("c", 2 * SECOND, 12 * SECOND) == SECOND  # one core over 2 s
    assert rates.rate("c", 2 * SECOND + 1000, 12 * SECOND + 10) == SECOND  # too close: the last rate
    assert rates.rate("c", 3 * SECOND, 14 * SECOND) == SECOND // 2  # half a core since 12 s


def test_cpu_rate_restarts_when_the_counter_goes_back() -> None:
    rates = CpuRates(min_window_ns=SECOND)
    rates.rate("c", 5 * SECOND, 0)
    assert rates.rate("c", SECOND, 2 * SECOND) is None  # the container restarted: new counter
    assert rates.rate("c", 2 * SECOND, 4 * SECOND) == SECOND // 2


def test_cpu_rates_forget_keys_nobody_asks_for() -> None:
    rates = CpuRates(min_window_ns=SECOND, forget_after_ns=100 * SECOND)
    rates.rate("old", 0, 0)
    rates.rate("new", 0, 50 * SECOND)
    rates.rate("new", 0, 120 * SECOND)
    assert len(rates) == 1


# --- network ----------------------------------------------------------------------------------------


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:1234567890   8    1    2    0     0          0         0   736   9    3    4    0     0       0          0
"""


def test_parse_net_dev() -> None:
    interfaces = parse_net_dev(NET_DEV)
    assert set(interfaces) == {"lo", "eth0"}
    eth0 = interfaces["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (1234567890, 8, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (736, 9, 3, 4)


def test_start_time_survives_odd_process_names() -> None:
    stat = "42 (we ird) proc)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10"
    assert parse_start_time(stat) == 987654


def test_net_dev_refuses_a_reused_pid(tmp_path: Path) -> None:
    stat = "7 (pause) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5555 1000 10"
    write_tree(tmp_path / "7" / "net", {"dev": NET_DEV})
    write_tree(tmp_path / "7", {"stat": stat})
    files = ProcessFiles(str(tmp_path))
    start = files.start_time(7)
    assert start == 5555
    assert files.net_dev(7, start) is not None
    (tmp_path / "7" / "stat").write_text(stat.replace("5555", "6666"))  # another process, same pid
    assert files.net_dev(7, start) is None
    assert files.net_dev(8, None) is None  # gone


def test_sample_defaults_are_unknown() -> None:
    sample = CgroupSample(1, 2, 3, 4, 5, 6)
    assert sample.memory_available is None and sample.swap_available is None and sample.tasks is None


def test_cpu_rates_outlive_a_prune_while_they_are_asked_for() -> None:
    """A prune that dropped every sample left each container without a rate once a minute."""
    rates = CpuRates(min_window_ns=1, forget_after_ns=100)
    start = 10**15
    assert rates.rate("c", 0, start) is None
    assert rates.rate("c", 50, start + 50) == 10**9
    assert rates.rate("c", 100, start + 100) == 10**9  # a prune ran here (every forget_after / 10)
