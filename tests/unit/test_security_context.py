"""CRI security settings to Docker: every refusal is INVALID_ARGUMENT, before anything is created."""

from __future__ import annotations

import json
import os

import grpc
import pytest

from dockershim_py import security_context as sc
from dockershim_py.api import api_pb2 as api
from dockershim_py.cgroups import capability_in_bounding_set, docker_cgroup_parent, effective_oom_score_adj
from dockershim_py.errors import CRIError


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(CRIError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.message


# --- user -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid, name, gid, expected",
    [(None, "", None, ""), (1000, "", None, "1000"), (0, "", 5, "0:5"), (None, "tester", 7, "tester:7"),
     (1, "tester", None, "tester")],
)
def test_docker_user(uid, name, gid, expected) -> None:
    as_value = lambda v: None if v is None else api.Int64Value(value=v)  # noqa: E731
    assert sc.docker_user(as_value(uid), name, as_value(gid)) == expected


def test_group_without_user_is_refused() -> None:
    assert "run_as_group" in _refused(sc.docker_user, None, "", api.Int64Value(value=5))


def test_ids_outside_runcs_range_are_refused() -> None:
    _refused(sc.docker_user, api.Int64Value(value=-1), "", None)
    _refused(sc.group_add, [1, -2])
    assert "outside 0..2147483647" in _refused(sc.docker_user, api.Int64Value(value=2**31), "", None)
    _refused(sc.docker_user, api.Int64Value(value=5), "", api.Int64Value(value=2**40))
    _refused(sc.group_add, [2**31])
    assert sc.docker_user(api.Int64Value(value=2**31 - 1), "", api.Int64Value(value=2**31 - 1)) == "2147483647:2147483647"


# --- SELinux, seccomp, AppArmor -----------------------------------------------------------------


def test_selinux_labels_keep_mcs_commas() -> None:
    options = api.SELinuxOption(user="system_u", role="system_r", type="container_t", level="s0:c1,c2")
    assert sc.selinux_security_opts(options) == [
        "label=user:system_u", "label=role:system_r", "label=type:container_t", "label=level:s0:c1,c2"
    ]
    assert sc.selinux_security_opts(None) == []
    _refused(sc.selinux_security_opts, api.SELinuxOption(type="x\nlabel=disable"))


def test_seccomp_profiles() -> None:
    profile = api.SecurityProfile
    assert sc.seccomp_security_opts(profile(profile_type=profile.Unconfined)) == ["seccomp=unconfined"]
    assert sc.seccomp_security_opts(profile(profile_type=profile.RuntimeDefault)) == []
    assert sc.seccomp_security_opts(None) == []
    assert sc.seccomp_security_opts(None, unset="unconfined") == ["seccomp=unconfined"]
    assert sc.seccomp_security_opts(None, "docker/default") == []
    assert sc.seccomp_security_opts(None, "unconfined") == ["seccomp=unconfined"]


def test_localhost_seccomp_profile_is_passed_inline() -> None:
    read = {"/etc/seccomp/p.json": '{ "defaultAction": "SCMP_ACT_ALLOW" }'}.__getitem__
    profile = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="/etc/seccomp/p.json")
    assert sc.seccomp_security_opts(profile, read=read) == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']
    assert sc.seccomp_security_opts(None, "localhost//etc/seccomp/p.json", read=read) == [
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'
    ]


def test_bad_localhost_seccomp_profiles_are_refused(tmp_path) -> None:
    localhost = api.SecurityProfile.Localhost
    assert "absolute" in _refused(sc.seccomp_security_opts, api.SecurityProfile(profile_type=localhost, localhost_ref="p.json"))
    missing = api.SecurityProfile(profile_type=localhost, localhost_ref=str(tmp_path / "missing.json"))
    assert "cannot read" in _refused(sc.seccomp_security_opts, missing)
    (tmp_path / "bad.json").write_text("{")
    bad = api.SecurityProfile(profile_type=localhost, localhost_ref=str(tmp_path / "bad.json"))
    assert "not JSON" in _refused(sc.seccomp_security_opts, bad)
    _refused(sc.seccomp_security_opts, None, "my-profile")


def test_a_localhost_profile_that_is_no_regular_file_or_too_large_is_refused_at_once(tmp_path) -> None:
    """A FIFO would hang the call, /dev/zero fill the shim's memory."""
    localhost = api.SecurityProfile.Localhost
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", "/dev/zero", tmp_path):
        message = _refused(sc.seccomp_security_opts, api.SecurityProfile(profile_type=localhost, localhost_ref=str(path)))
        assert "cannot read" in message, message
    (tmp_path / "huge.json").write_bytes(b" " * (sc.MAX_PROFILE_BYTES + 1))
    huge = api.SecurityProfile(profile_type=localhost, localhost_ref=str(tmp_path / "huge.json"))
    assert "larger than" in _refused(sc.seccomp_security_opts, huge)


def test_apparmor_profiles() -> None:
    profile = api.SecurityProfile
    assert sc.apparmor_security_opts(None) == []
    assert sc.apparmor_security_opts(profile(profile_type=profile.RuntimeDefault)) == []
    assert sc.apparmor_security_opts(profile(profile_type=profile.Unconfined)) == ["apparmor=unconfined"]
    assert sc.apparmor_security_opts(profile(profile_type=profile.Localhost, localhost_ref="localhost/k8s-x")) == [
        "apparmor=k8s-x"
    ]
    assert sc.apparmor_security_opts(None, "localhost/k8s-y") == ["apparmor=k8s-y"]
    assert sc.apparmor_security_opts(None, "unconfined") == ["apparmor=unconfined"]
    _refused(sc.apparmor_security_opts, profile(profile_type=profile.Localhost, localhost_ref=""))
    _refused(sc.apparmor_security_opts, None, "whatever")


# --- sysctls --------------------------------------------------------------------------------------


def test_namespaced_sysctls_pass_in_dotted_form() -> None:
    sysctls = {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "net/ipv4/conf/eth0.100/rp_filter": "1",
        "kernel.shm_rmid_forced": "1",
        "fs.mqueue.msg_max": "20",
        "kernel.sem": "250 32000 32 128",
        "net.ipv4.ip_local_reserved_ports": "8080,9148",
        "net.ipv4.ip_local_port_range": "32768\t60999",
    }
    valid = sc.validate_sysctls(sysctls, host_network=False, host_ipc=False)
    assert valid["net.ipv4.conf.eth0/100.rp_filter"] == "1"
    assert valid["kernel.sem"] == "250 32000 32 128"
    assert len(valid) == len(sysctls)


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("kernel.core_pattern", "|/evil", "not namespaced"),
        ("vm.overcommit_memory", "1", "not namespaced"),
        ("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/evil", "another setting"),  # CVE-2022-0811
        ("net.ipv4.ip_forward", "1=2", "another setting"),
        ("net.ipv4.ip_forward", "1\nkernel.core_pattern=x", "control character"),
        ("net.ipv4.ip_forward", "", "empty"),
        ("net.ipv4.ip_forward", "1" * 5000, "too long"),
        ("net.ipv4.ip_forward=1+kernel.core_pattern", "x", "not a valid sysctl name"),
        ("NET.IPV4.IP_FORWARD", "1", "not a valid sysctl name"),
        ("net..ipv4", "1", "not a valid sysctl name"),
        ("", "1", "not a valid sysctl name"),
    ],
)
def test_dangerous_sysctls_are_refused(name: str, value: str, words: str) -> None:
    assert words in _refused(sc.validate_sysctls, {name: value}, host_network=False, host_ipc=False)


def test_sysctls_of_host_namespaces_are_refused() -> None:
    assert "host's network" in _refused(sc.validate_sysctls, {"net.ipv4.ip_forward": "1"}, True, False)
    assert "host's IPC" in _refused(sc.validate_sysctls, {"kernel.msgmax": "1"}, False, True)
    assert sc.validate_sysctls({"kernel.msgmax": "1"}, True, False) == {"kernel.msgmax": "1"}


# --- namespaces -----------------------------------------------------------------------------------


def test_sandbox_namespaces() -> None:
    own = sc.sandbox_namespaces(None, "default")
    assert (own.network_mode, own.pid_mode, own.ipc_mode) == ("default", "", "shareable")
    host = sc.sandbox_namespaces(api.NamespaceOption(network=api.NODE, pid=api.NODE, ipc=api.NODE), "default")
    assert (host.network_mode, host.pid_mode, host.ipc_mode) == ("host", "host", "host")
    assert host.host_network


def test_sandbox_namespaces_refuse_target_and_user_namespaces() -> None:
    assert "TARGET" in _refused(sc.sandbox_namespaces, api.NamespaceOption(pid=api.TARGET), "default")
    userns = api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD))
    assert "user namespaces" in _refused(sc.sandbox_namespaces, userns, "default")
    node_userns = api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NODE))
    assert sc.sandbox_namespaces(node_userns, "default").network_mode == "default"


def test_namespace_options_read_back() -> None:
    assert sc.namespace_options_of("host", "host", "host") == api.NamespaceOption(
        network=api.NODE, pid=api.NODE, ipc=api.NODE
    )
    assert sc.namespace_options_of("default", "", "shareable") == api.NamespaceOption(
        network=api.POD, pid=api.CONTAINER, ipc=api.POD
    )
    # A shared PID namespace looks the same in Docker: the pause container's label says which was asked for.
    assert sc.namespace_options_of("default", "", "shareable", "POD").pid == api.POD
    assert sc.namespace_options_of("default", "", "shareable", "CONTAINER").pid == api.CONTAINER
    assert sc.namespace_options_of("host", "host", "host", "POD").pid == api.NODE


# --- the sandbox as a whole -----------------------------------------------------------------------


def test_sandbox_security_defaults() -> None:
    security = sc.sandbox_security(None, "default")
    assert security.user == ""
    assert security.host_config == {"Privileged": False, "ReadonlyRootfs": False, "SecurityOpt": ["no-new-privileges"]}


def test_sandbox_security_full() -> None:
    linux = api.LinuxPodSandboxConfig(
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        security_context=api.LinuxSandboxSecurityContext(
            run_as_user=api.Int64Value(value=65535),
            run_as_group=api.Int64Value(value=65535),
            readonly_rootfs=True,
            privileged=True,
            supplemental_groups=[7777],
            selinux_options=api.SELinuxOption(level="s0:c1"),
            seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined),
            namespace_options=api.NamespaceOption(pid=api.NODE),
        ),
    )
    security = sc.sandbox_security(linux, "default")
    assert security.user == "65535:65535"
    assert security.namespaces.pid_mode == "host"
    assert security.host_config == {
        "Privileged": True,
        "ReadonlyRootfs": True,
        "SecurityOpt": ["no-new-privileges", "label=level:s0:c1", "seccomp=unconfined"],
        "GroupAdd": ["7777"],
        "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
    }
    json.dumps(security.host_config)  # goes to Docker as JSON


def test_sandbox_security_refuses_net_sysctls_on_host_network() -> None:
    linux = api.LinuxPodSandboxConfig(
        sysctls={"net.ipv4.ip_forward": "1"},
        security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(network=api.NODE)),
    )
    _refused(sc.sandbox_security, linux, "default")


# --- cgroups and OOM scores -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "parent, driver, expected",
    [
        ("", "systemd", ""),
        ("/kubepods/burstable/pod123", "cgroupfs", "/kubepods/burstable/pod123"),
        ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice", "systemd",
         "kubepods-burstable-pod1_2.slice"),
        ("/kubepods/burstable/pod12-34", "systemd", "kubepods-burstable-pod12_34.slice"),
        ("kubepods-besteffort.slice", "systemd", "kubepods-besteffort.slice"),
    ],
)
def test_docker_cgroup_parent(parent: str, driver: str, expected: str) -> None:
    assert docker_cgroup_parent(parent, driver) == expected


def test_cgroup_parent_cannot_climb() -> None:
    _refused(docker_cgroup_parent, "/kubepods/../../system.slice", "cgroupfs")


def test_oom_score_capability() -> None:
    full = "Name:\tx\nCapBnd:\t000001ffffffffff\n"
    without_sys_resource = "CapBnd:\t%016x\n" % (0x1FFFFFFFFFF & ~(1 << 24))
    assert capability_in_bounding_set(full, 24)
    assert not capability_in_bounding_set(without_sys_resource, 24)
    assert not capability_in_bounding_set("Name: x\n", 24)
    assert effective_oom_score_adj(-998, lowering_allowed=False) == 0
    assert effective_oom_score_adj(-998, lowering_allowed=True) == -998
    assert effective_oom_score_adj(100, lowering_allowed=False) == 100


# Found by mutation testing: behaviour no test above pinned -----------------------------------


@pytest.mark.parametrize("capability", ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                                        "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                                        "AUDIT_WRITE"])
def test_dropping_any_of_dockers_default_capabilities_reaches_cap_drop(capability: str) -> None:
    """A misspelt default was left out of CapDrop: the container kept what the pod dropped."""
    context = api.LinuxContainerSecurityContext(capabilities=api.Capability(drop_capabilities=[capability]))
    assert sc.container_security(context).host_config["CapDrop"] == ["CAP_" + capability]


def test_the_capability_table_is_the_kernels_by_number() -> None:
    assert len(sc.CAPABILITIES) == 41
    assert [sc.CAPABILITIES.index(name) for name in ("DAC_READ_SEARCH", "FOWNER", "NET_BROADCAST", "SYS_ADMIN",
                                                      "SYSLOG", "BPF")] == [2, 3, 11, 21, 34, 39]
