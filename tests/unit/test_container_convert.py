"""ContainerConfig to Docker's create body, and Docker's inspect and list entries back to CRI."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest

from dockershim_py import container_convert as convert
from dockershim_py import labels
from dockershim_py.api import api_pb2 as api
from dockershim_py.container_convert import ImageVolume, NodeView, SandboxView
from dockershim_py.errors import CRIError
from dockershim_py.image_accounts import Account, Accounts, Group
from dockershim_py.security_context import (
    DOCKER_20_10_CAPABILITIES, container_namespace_modes, container_security, host_devices, initial_identity,
    missing_capabilities,
)
from proto_fields import with_fields

SANDBOX_ID = "a" * 64
SANDBOX = SandboxView(id=SANDBOX_ID, host_network=False)
NODE = NodeView(log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})


def sandbox_config(**fields) -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web", namespace="shop", uid="uid-1", attempt=0),
        log_directory="/var/log/pods/shop_web_uid-1",
    )
    for key, value in fields.items():
        getattr(config, key).CopyFrom(value)
    return config


def container_config(**fields) -> api.ContainerConfig:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="app", attempt=2),
        image=api.ImageSpec(image="sha256:" + "b" * 64, user_specified_image="busybox:1.0"),
        log_path="app/2.log",
    )
    return with_fields(config, **fields)


def body_of(config: api.ContainerConfig, node: NodeView = NODE, sandbox: SandboxView = SANDBOX, **kwargs) -> dict:
    return convert.create_body(config, kwargs.pop("sandbox_config", sandbox_config()), sandbox, node, **kwargs)


def refused(code: grpc.StatusCode, fn, *args, **kwargs) -> str:
    with pytest.raises(CRIError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


def security(**fields) -> api.LinuxContainerConfig:
    return api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(**fields))


# --- naming, labels, command -------------------------------------------------------------------


def test_name_and_labels_are_dockershims() -> None:
    config = container_config(labels={"app": "web"}, annotations={"note": "x"})
    assert convert.container_name_of(config, sandbox_config()) == "k8s_app_web_shop_uid-1_2"
    body = body_of(config)
    assert body["Labels"] == {
        "app": "web",
        "annotation.note": "x",
        labels.CONTAINER_TYPE_LABEL: "container",
        labels.SANDBOX_ID_LABEL: SANDBOX_ID,
        labels.CONTAINER_LOG_PATH_LABEL: "/var/log/pods/shop_web_uid-1/app/2.log",
        labels.USER_SPECIFIED_IMAGE_LABEL: "busybox:1.0",
        labels.RUNTIME_HANDLER_LABEL: "",
        labels.PID_NAMESPACE_LABEL: "",
    }
    assert body["Image"] == "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd"),
    [
        ([], [], None, None),  # the image's entrypoint and cmd
        (["/bin/app"], [], ["/bin/app"], None),  # a command drops the image's cmd (Docker's merge)
        ([], ["--flag"], None, ["--flag"]),  # args alone keep the image's entrypoint
        (["sh", "-c"], ["echo hi"], ["sh", "-c"], ["echo hi"]),
    ],
)
def test_command_and_args_follow_kubernetes(command, args, entrypoint, cmd) -> None:
    body = body_of(container_config(command=command, args=args))
    assert body.get("Entrypoint") == entrypoint
    assert body.get("Cmd") == cmd


def test_env_working_dir_stdin_tty_and_stop_signal() -> None:
    body = body_of(container_config(
        envs=[api.KeyValue(key="A", value=b"1"), api.KeyValue(key="B", value="grüße=x".encode())],
        working_dir="/srv", stdin=True, stdin_once=True, tty=True, stop_signal=api.SIGQUIT,
    ))
    assert body["Env"] == ["A=1", "B=grüße=x"]
    assert (body["WorkingDir"], body["OpenStdin"], body["StdinOnce"], body["Tty"]) == ("/srv", True, True, True)
    assert body["StopSignal"] == "SIGQUIT"


@pytest.mark.parametrize(
    "env",
    [api.KeyValue(key="", value=b"x"), api.KeyValue(key="A=B", value=b"x"), api.KeyValue(key="A", value=b"\xff"),
     api.KeyValue(key="A", value=b"a\x00b")],
)
def test_bad_env_is_refused(env) -> None:
    refused(grpc.StatusCode.INVALID_ARGUMENT, body_of, container_config(envs=[env]))


@pytest.mark.parametrize(
    "config",
    [
        container_config(image=api.ImageSpec()),
        container_config(working_dir="relative"),
        container_config(log_path="/abs.log"),
        container_config(log_path="../escape.log"),
        container_config(metadata=api.ContainerMetadata(name="bad_name")),
    ],
)
def test_bad_requests_are_refused_before_anything_is_made(config) -> None:
    with pytest.raises(CRIError) as caught:
        body_of(config)
        convert.container_name_of(config, sandbox_config())
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_relative_log_directory_is_refused() -> None:
    """RunPodSandbox refuses one; CreateContainer's own sandbox_config must not slip one past."""
    relative = sandbox_config()
    relative.log_directory = "relative/dir"
    message = refused(grpc.StatusCode.INVALID_ARGUMENT, convert.log_path_of, container_config(), relative)
    assert "must be an absolute path" in message


def test_a_log_path_must_stay_inside_a_log_directory() -> None:
    without = sandbox_config()
    without.log_directory = ""
    assert "no log_directory" in refused(grpc.StatusCode.INVALID_ARGUMENT, convert.log_path_of, container_config(),
                                         without)
    for escaping in ("/var/log/x.log", "../other/0.log", "app/../../x.log"):
        assert "relative to log_directory" in refused(grpc.StatusCode.INVALID_ARGUMENT, convert.log_path_of,
                                                      container_config(log_path=escaping), sandbox_config())
    assert convert.log_path_of(container_config(log_path=""), without) == ""


def test_every_container_logs_to_json_file_with_a_64mib_shm() -> None:
    host = body_of(container_config())["HostConfig"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["ShmSize"] == 64 * 1024 * 1024


# --- namespaces, runtime, cgroups ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "target", "expected"),
    [
        (api.POD, "", f"container:{SANDBOX_ID}"),
        (api.CONTAINER, "", None),
        (api.NODE, "", "host"),
        (api.TARGET, "c" * 64, "container:" + "c" * 64),
    ],
)
def test_pid_namespace_follows_the_options(pid, target, expected) -> None:
    modes = container_namespace_modes(api.NamespaceOption(pid=pid, target_id=target), SANDBOX_ID, False)
    assert modes.get("PidMode") == expected
    assert modes["NetworkMode"] == modes["IpcMode"] == f"container:{SANDBOX_ID}"
    assert "UTSMode" not in modes


def test_host_network_sandbox_gives_host_uts_and_runtime_is_inherited() -> None:
    host = body_of(container_config(), sandbox=SandboxView(id=SANDBOX_ID, host_network=True, runtime="kata"))["HostConfig"]
    assert host["UTSMode"] == "host"
    assert host["Runtime"] == "kata"


@pytest.mark.parametrize(
    "options",
    [api.NamespaceOption(pid=api.TARGET), api.NamespaceOption(pid=api.TARGET, target_id="not-an-id"),
     api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD))],
)
def test_bad_namespace_options_are_refused(options) -> None:
    refused(grpc.StatusCode.INVALID_ARGUMENT, container_namespace_modes, options, SANDBOX_ID, False)


def test_cgroup_parent_comes_from_the_sandbox_config_per_driver() -> None:
    parent = sandbox_config(linux=api.LinuxPodSandboxConfig(cgroup_parent="/kubepods/burstable/pod1"))
    assert body_of(container_config(), sandbox_config=parent)["HostConfig"]["CgroupParent"] == "/kubepods/burstable/pod1"
    systemd = NodeView(cgroup_driver="systemd")
    assert body_of(container_config(), node=systemd, sandbox_config=parent)["HostConfig"]["CgroupParent"] == \
        "kubepods-burstable-pod1.slice"


# --- resources ---------------------------------------------------------------------------------


def test_resources_map_with_swap_equal_to_memory() -> None:
    resources = api.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=64 << 20,
        oom_score_adj=500, cpuset_cpus="0", cpuset_mems="0",
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=0)],
    )
    host = body_of(container_config(linux=api.LinuxContainerConfig(resources=resources)))["HostConfig"]
    assert {key: host[key] for key in ("CpuPeriod", "CpuQuota", "CpuShares", "Memory", "MemorySwap", "OomScoreAdj",
                                       "CpusetCpus", "CpusetMems")} == {
        "CpuPeriod": 100000, "CpuQuota": 50000, "CpuShares": 512, "Memory": 64 << 20, "MemorySwap": 64 << 20,
        "OomScoreAdj": 500, "CpusetCpus": "0", "CpusetMems": "0",
    }


def test_a_larger_swap_limit_is_honoured_and_a_smaller_one_refused() -> None:
    resources = api.LinuxContainerResources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=300)
    assert convert.docker_resources(resources, True)["MemorySwap"] == 300
    resources.memory_swap_limit_in_bytes = 50
    refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_resources, resources, True)


def test_negative_oom_score_becomes_zero_where_the_node_cannot_lower_it() -> None:
    resources = api.LinuxContainerResources(oom_score_adj=-999)
    assert convert.docker_resources(resources, can_lower_oom_score=True)["OomScoreAdj"] == -999
    assert convert.docker_resources(resources, can_lower_oom_score=False)["OomScoreAdj"] == 0


def test_unlimited_swap_is_dockers_minus_one_and_read_back() -> None:
    """The kubelet's UnlimitedSwap (NodeSwap, 1.22-1.29) asks -1 of every container."""
    limited = api.LinuxContainerResources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=-1)
    assert convert.docker_resources(limited, True)["MemorySwap"] == -1
    assert "MemorySwap" not in convert.docker_resources(api.LinuxContainerResources(memory_swap_limit_in_bytes=-1), True)
    assert convert.update_body(limited)["MemorySwap"] == -1
    assert convert.resources_of({"Memory": 100, "MemorySwap": -1}).linux.memory_swap_limit_in_bytes == -1
    refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_resources,
            api.LinuxContainerResources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=-2), True)


@pytest.mark.parametrize("cri, docker_name", [
    (api.SIGTERM, "SIGTERM"), (api.SIGRTMIN, "SIGRTMIN"), (api.SIGRTMINPLUS1, "SIGRTMIN+1"),
    (api.SIGRTMINPLUS15, "SIGRTMIN+15"), (api.SIGRTMAXMINUS14, "SIGRTMAX-14"), (api.SIGRTMAXMINUS1, "SIGRTMAX-1"),
    (api.SIGRTMAX, "SIGRTMAX"),
])
def test_stop_signals_are_named_as_docker_names_them(cri: int, docker_name: str) -> None:
    assert convert.docker_stop_signal(cri) == docker_name
    assert convert.cri_stop_signal(docker_name) == cri


@pytest.mark.parametrize("docker_value, cri", [
    ("TERM", api.SIGTERM), ("sigquit", api.SIGQUIT), ("9", api.SIGKILL), ("15", api.SIGTERM), ("34", api.SIGRTMIN),
    ("49", api.SIGRTMINPLUS15), ("50", api.SIGRTMAXMINUS14), ("64", api.SIGRTMAX), ("", api.RUNTIME_DEFAULT),
    ("SIGNOPE", api.RUNTIME_DEFAULT), ("99", api.RUNTIME_DEFAULT), ("²", api.RUNTIME_DEFAULT),
])
def test_an_images_stop_signal_is_read_in_every_form_docker_takes(docker_value: str, cri: int) -> None:
    assert convert.cri_stop_signal(docker_value) == cri


@pytest.mark.parametrize(
    "resources",
    [api.LinuxContainerResources(cpu_shares=-1), api.LinuxContainerResources(cpu_quota=-2),
     api.LinuxContainerResources(oom_score_adj=1001), api.LinuxContainerResources(memory_limit_in_bytes=-5),
     api.LinuxContainerResources(cpu_shares=1), api.LinuxContainerResources(cpu_shares=262145)],
)
def test_impossible_resources_are_refused(resources) -> None:
    refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_resources, resources, True)


def test_update_body_leaves_out_what_docker_cannot_update() -> None:
    body = convert.update_body(api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=1 << 30, oom_score_adj=5))
    assert body == {"CpuShares": 256, "Memory": 1 << 30, "MemorySwap": 1 << 30}


# --- mounts, devices, CDI ------------------------------------------------------------------------


def test_mounts_are_typed_binds_with_propagation_and_non_recursive_read_only() -> None:
    mounts = [
        api.Mount(container_path="/data", host_path="/srv/data"),
        api.Mount(container_path="/ro", host_path="/srv/ro", readonly=True),
        api.Mount(container_path="/in", host_path="/srv/in", propagation=api.PROPAGATION_HOST_TO_CONTAINER),
        api.Mount(container_path="/both", host_path="/srv/both", propagation=api.PROPAGATION_BIDIRECTIONAL),
    ]
    typed, binds = convert.docker_mounts(mounts, {}, NodeView(api_version="1.41"))
    assert binds == []
    assert typed == [
        {"Type": "bind", "Source": "/srv/data", "Target": "/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/srv/ro", "Target": "/ro", "ReadOnly": True},
        {"Type": "bind", "Source": "/srv/in", "Target": "/in", "ReadOnly": False, "BindOptions": {"Propagation": "rslave"}},
        {"Type": "bind", "Source": "/srv/both", "Target": "/both", "ReadOnly": False,
         "BindOptions": {"Propagation": "rshared"}},
    ]
    newer, _ = convert.docker_mounts(mounts[1:2], {}, NodeView(api_version="1.45"))
    assert newer[0]["BindOptions"] == {"ReadOnlyNonRecursive": True}


def test_selinux_relabel_uses_a_bind_only_where_docker_has_selinux() -> None:
    mount = api.Mount(container_path="/data", host_path="/srv/data", readonly=True, selinux_relabel=True,
                      propagation=api.PROPAGATION_HOST_TO_CONTAINER)
    typed, binds = convert.docker_mounts([mount], {}, NodeView(selinux_enabled=True))
    assert (typed, binds) == ([], ["/srv/data:/data:ro,Z,rslave"])
    typed, binds = convert.docker_mounts([mount], {}, NodeView(selinux_enabled=False))
    assert binds == [] and typed[0]["Source"] == "/srv/data"


@pytest.mark.parametrize(
    "mount",
    [
        api.Mount(container_path="relative", host_path="/srv"),
        api.Mount(container_path="/x", host_path=""),
        api.Mount(container_path="/x", host_path="/srv", recursive_read_only=True, readonly=True),
        api.Mount(container_path="/x", host_path="/srv", mount_options=["noexec", "nosuid"]),
        api.Mount(container_path="/x", host_path="/srv", uidMappings=[api.IDMapping(host_id=1000, container_id=0, length=1)]),
    ],
)
def test_mounts_docker_cannot_make_are_refused(mount) -> None:
    refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_mounts, [mount], {}, NODE)


def test_image_volumes_bind_their_prepared_directory_read_only() -> None:
    mount = api.Mount(container_path="/mnt/img", readonly=True, image=api.ImageSpec(image="busybox"))
    volume = ImageVolume(host_path="/root/image-volumes/" + "c" * 64 + "/rootfs/etc", image_id="sha256:" + "c" * 64)
    typed, _ = convert.docker_mounts([mount], {0: volume}, NODE)
    assert typed == [{"Type": "bind", "Source": volume.host_path, "Target": "/mnt/img", "ReadOnly": True}]


def test_devices_and_cdi() -> None:
    config = container_config(devices=[api.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw")])
    assert body_of(config)["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}]
    refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_devices, [api.Device(host_path="/dev/null", permissions="x")])
    assert "container_path 'dev/mynull'" in refused(grpc.StatusCode.INVALID_ARGUMENT, convert.docker_devices, [
        api.Device(host_path="/dev/null", container_path="dev/mynull")])
    cdi = container_config(CDI_devices=[api.CDIDevice(name="vendor.com/gpu=0")])
    assert "CDI" in refused(grpc.StatusCode.FAILED_PRECONDITION, body_of, cdi)
    host = body_of(cdi, node=NodeView(cdi_supported=True))["HostConfig"]
    assert host["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["vendor.com/gpu=0"]}]


# --- security context ------------------------------------------------------------------------------


def test_security_context_maps_every_field() -> None:
    context = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["net_admin", "CAP_SYS_TIME"], drop_capabilities=["KILL"]),
        run_as_user=api.Int64Value(value=1234), run_as_group=api.Int64Value(value=5678),
        supplemental_groups=[7777], readonly_rootfs=True, no_new_privs=True,
        masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
        selinux_options=api.SELinuxOption(user="u", role="r", type="t", level="s0:c1,c2"),
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault),
        apparmor=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="my-profile"),
    )
    result = container_security(context)
    assert result.user == "1234:5678"
    assert result.host_config == {
        "Privileged": False,
        "ReadonlyRootfs": True,
        "CapAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"],
        "CapDrop": ["CAP_KILL"],
        "GroupAdd": ["7777"],
        "MaskedPaths": ["/proc/kcore"],
        "ReadonlyPaths": ["/proc/sys"],
        "SecurityOpt": ["no-new-privileges", "label=user:u", "label=role:r", "label=type:t", "label=level:s0:c1,c2",
                        "apparmor=my-profile"],
    }


def test_username_and_defaults() -> None:
    result = container_security(api.LinuxContainerSecurityContext(run_as_username="tester"))
    assert result.user == "tester"
    assert result.host_config["SecurityOpt"] == ["seccomp=unconfined"]  # dockershim's default without a profile
    assert "MaskedPaths" not in result.host_config  # none asked for: Docker's defaults


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"seccomp": api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)}, ["seccomp=unconfined"]),
        ({"seccomp_profile_path": "runtime/default"}, []),
        ({"seccomp": api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="/p.json")},
         ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']),
        ({"seccomp": api.SecurityProfile(), "apparmor_profile": "localhost/old-field"}, ["apparmor=old-field"]),
        ({"seccomp": api.SecurityProfile(), "apparmor": api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined),
          "apparmor_profile": "localhost/ignored"}, ["apparmor=unconfined"]),
    ],
)
def test_seccomp_and_apparmor_profiles(fields, expected) -> None:
    context = api.LinuxContainerSecurityContext(**fields)
    result = container_security(context, load_profile=lambda path: json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    assert result.host_config["SecurityOpt"] == expected


def test_all_capabilities_leave_out_what_the_node_lacks() -> None:
    lacking = missing_capabilities(0x1FFFEFFFFFF, 40)
    assert lacking == frozenset({"CAP_SYS_RESOURCE"})
    context = api.LinuxContainerSecurityContext(capabilities=api.Capability(add_capabilities=["ALL"]))
    assert container_security(context, lacking).host_config["CapDrop"] == ["CAP_SYS_RESOURCE"]
    assert "CapDrop" not in container_security(context).host_config


def test_privileged_is_made_of_its_parts_where_runc_cannot_run_it() -> None:
    context = api.LinuxContainerSecurityContext(
        privileged=True, masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
        capabilities=api.Capability(drop_capabilities=["ALL"]),
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault), no_new_privs=True)
    security = container_security(context, frozenset({"CAP_SYS_RESOURCE"}), docker_privileged_runs=False)
    assert security.privileged_in_parts
    assert security.host_config == {
        "Privileged": False, "ReadonlyRootfs": False,
        "SecurityOpt": ["no-new-privileges", "seccomp=unconfined", "apparmor=unconfined", "label=disable"],
        "CapAdd": ["ALL"], "CapDrop": ["CAP_SYS_RESOURCE"],
        "MaskedPaths": [], "ReadonlyPaths": [], "DeviceCgroupRules": ["a *:* rwm"],
    }
    node = convert.NodeView(lacking_capabilities=frozenset({"CAP_SYS_RESOURCE"}), host_devices=("/dev/kmsg", "/dev/fuse"))
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="p"), image=api.ImageSpec(image="busybox"),
                                 linux=api.LinuxContainerConfig(security_context=context))
    sandbox_config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"))
    for runtime, privileged in (("runc", False), ("", False), ("critest-runc", True)):
        body = convert.create_body(config, sandbox_config, convert.SandboxView("s" * 64, False, runtime), node)
        host = body["HostConfig"]
        assert host["Privileged"] is privileged
        assert [d["PathInContainer"] for d in host.get("Devices", [])] == ([] if privileged else ["/dev/kmsg", "/dev/fuse"])
        # crictl inspect tells it privileged either way, and which way it was made
        inspect = {"Config": {"Labels": body["Labels"]}, "HostConfig": host}
        info = json.loads(convert.verbose_info(inspect, None)["info"])
        assert (info["privileged"], info["privilegedInParts"]) == (True, not privileged)
    config.devices.add(host_path="/dev/null", container_path="/dev/fuse")  # a device asked for keeps its place
    host = convert.create_body(config, sandbox_config, convert.SandboxView("s" * 64, False, "runc"), node)["HostConfig"]
    assert [(d["PathOnHost"], d["PathInContainer"]) for d in host["Devices"]] == [
        ("/dev/null", "/dev/fuse"), ("/dev/kmsg", "/dev/kmsg")]


def test_an_apparmor_profile_needs_apparmor_on_the_node() -> None:
    context = api.LinuxContainerSecurityContext(
        apparmor=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="my-profile"))
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="a"), image=api.ImageSpec(image="busybox"),
                                 linux=api.LinuxContainerConfig(security_context=context))
    sandbox_config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"))
    sandbox = convert.SandboxView("s" * 64, False)
    refused(grpc.StatusCode.FAILED_PRECONDITION, convert.create_body, config, sandbox_config, sandbox, NodeView())
    body = convert.create_body(config, sandbox_config, sandbox, NodeView(apparmor_enabled=True))
    assert "apparmor=my-profile" in body["HostConfig"]["SecurityOpt"]
    config.linux.security_context.apparmor.profile_type = api.SecurityProfile.Unconfined  # needs nothing
    convert.create_body(config, sandbox_config, sandbox, NodeView())


@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
def test_host_devices_are_the_device_nodes_runc_would_list(tmp_path) -> None:
    for directory in ("net", "pts", "shm"):
        (tmp_path / directory).mkdir()
    for name in ("null", "net/tun", "pts/0", "shm/x", "console", "ptmx"):
        os.mknod(tmp_path / name, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (tmp_path / "stdin").symlink_to("/proc/self/fd/0")
    (tmp_path / "plain").write_text("")
    assert host_devices(str(tmp_path)) == (str(tmp_path / "net/tun"), str(tmp_path / "null"))


@pytest.mark.parametrize(
    ("add", "drop", "docker_add", "docker_drop"),
    [
        # containerd's order: ALL added, ALL dropped, the named added, the named dropped.
        (["ALL"], ["ALL"], [], ["ALL"]),
        (["ALL", "NET_ADMIN"], ["ALL"], ["CAP_NET_ADMIN"], ["ALL"]),
        (["NET_ADMIN", "CHOWN"], ["ALL", "CHOWN"], ["CAP_NET_ADMIN"], ["ALL"]),
        (["ALL"], ["CHOWN"], ["ALL"], ["CAP_CHOWN", "CAP_SYS_RESOURCE"]),
        (["NET_ADMIN"], ["NET_ADMIN", "KILL"], [], ["CAP_KILL"]),
        # Docker 20.10 refuses to drop what it does not know, and never gives it anyway.
        ([], ["PERFMON", "BPF", "CHECKPOINT_RESTORE", "KILL"], [], ["CAP_KILL"]),
    ],
)
def test_capabilities_mean_what_containerd_gives(add, drop, docker_add, docker_drop) -> None:
    context = api.LinuxContainerSecurityContext(capabilities=api.Capability(add_capabilities=add, drop_capabilities=drop))
    host = container_security(context, frozenset({"CAP_SYS_RESOURCE"})).host_config
    assert (host.get("CapAdd", []), host.get("CapDrop", [])) == (docker_add, docker_drop)


def test_all_capabilities_drop_only_what_docker_20_10_knows() -> None:
    """It refuses PERFMON in CapDrop even beside an added ALL (a node lacking it: dockerd in a container)."""
    context = api.LinuxContainerSecurityContext(capabilities=api.Capability(
        add_capabilities=["ALL"], drop_capabilities=["PERFMON", "KILL"]))
    lacking = frozenset({"CAP_SYS_RESOURCE", "CAP_BPF"})
    host = container_security(context, lacking, docker_knows=DOCKER_20_10_CAPABILITIES).host_config
    assert host["CapDrop"] == ["CAP_KILL", "CAP_SYS_RESOURCE"]
    assert container_security(context, lacking).host_config["CapDrop"] == [
        "CAP_PERFMON", "CAP_KILL", "CAP_BPF", "CAP_SYS_RESOURCE"]  # a newer Docker knows them


def test_privileged_ignores_caps_and_masks_and_is_passed_on_where_its_runtime_copes() -> None:
    context = api.LinuxContainerSecurityContext(privileged=True, masked_paths=["/proc/kcore"],
                                                capabilities=api.Capability(add_capabilities=["ALL"]))
    for lacking in (frozenset(), frozenset({"CAP_SYS_RESOURCE"})):
        host = container_security(context, lacking).host_config
        assert host["Privileged"] is True
        assert "MaskedPaths" not in host and "CapAdd" not in host and "CapDrop" not in host


@pytest.mark.parametrize(
    ("context", "code"),
    [
        (api.LinuxContainerSecurityContext(capabilities=api.Capability(add_capabilities=["NOT_A_CAP"])),
         grpc.StatusCode.INVALID_ARGUMENT),
        (api.LinuxContainerSecurityContext(run_as_group=api.Int64Value(value=1)), grpc.StatusCode.INVALID_ARGUMENT),
        (api.LinuxContainerSecurityContext(capabilities=api.Capability(add_ambient_capabilities=["NET_RAW"])),
         grpc.StatusCode.UNIMPLEMENTED),
        (api.LinuxContainerSecurityContext(seccomp_profile_path="bogus"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_security_contexts_docker_cannot_give_are_refused(context, code) -> None:
    refused(code, container_security, context)


# --- status ----------------------------------------------------------------------------------------

CREATED = "2026-11-22T10:00:00.000000001Z"
STARTED = "2026-11-22T10:00:01.5Z"
FINISHED = "2026-11-22T10:00:03.000000123Z"
ZERO = "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("docker_state", "state", "reason", "started", "finished"),
    [
        ({"Running": True, "StartedAt": STARTED, "FinishedAt": ZERO}, api.CONTAINER_RUNNING, "", 1, 0),
        ({"StartedAt": STARTED, "FinishedAt": FINISHED, "ExitCode": 0}, api.CONTAINER_EXITED, "Completed", 1, 1),
        ({"StartedAt": STARTED, "FinishedAt": FINISHED, "ExitCode": 2}, api.CONTAINER_EXITED, "Error", 1, 1),
        ({"StartedAt": STARTED, "FinishedAt": FINISHED, "ExitCode": 137, "OOMKilled": True},
         api.CONTAINER_EXITED, "OOMKilled", 1, 1),
        ({"StartedAt": ZERO, "FinishedAt": ZERO, "ExitCode": 127, "Error": "exec: not found"},
         api.CONTAINER_EXITED, "ContainerCannotRun", "created", "created"),
        ({"StartedAt": ZERO, "FinishedAt": ZERO, "ExitCode": 0}, api.CONTAINER_CREATED, "", 0, 0),
    ],
)
def test_state_and_reason(docker_state, state, reason, started, finished) -> None:
    created = convert.parse_docker_time(CREATED)
    result = convert.state_of(docker_state, created)
    assert (result.state, result.reason) == (state, reason)
    expected = {0: 0, 1: None, "created": created}
    if expected[started] is not None:
        assert result.started_at == expected[started]
    else:
        assert result.started_at == convert.parse_docker_time(STARTED)
    if expected[finished] is not None:
        assert result.finished_at == expected[finished]
    else:
        assert result.finished_at == 1795341603000000123
    assert result.message == docker_state.get("Error", "")


def test_a_run_too_short_for_docker_never_finishes_before_it_starts() -> None:
    result = convert.state_of({"StartedAt": FINISHED, "FinishedAt": STARTED, "ExitCode": 0}, 0)
    assert result.finished_at == result.started_at == convert.parse_docker_time(FINISHED)


def inspect_of(**overrides) -> dict:
    inspect = {
        "Id": "f" * 64,
        "Name": "/k8s_app_web_shop_uid-1_2",
        "Created": CREATED,
        "Image": "sha256:" + "b" * 64,
        "State": {"Running": True, "Pid": 42, "StartedAt": STARTED, "FinishedAt": ZERO},
        "Config": {
            "Image": "sha256:" + "b" * 64,
            "User": "1234:5678",
            "StopSignal": "SIGQUIT",
            "Labels": labels.container_labels({"app": "web"}, {"note": "x"}, SANDBOX_ID, "/logs/app/2.log")
            | {labels.USER_SPECIFIED_IMAGE_LABEL: "busybox:1.0"},
        },
        "HostConfig": {"CpuShares": 512, "Memory": 1 << 30, "MemorySwap": 1 << 30, "OomScoreAdj": 10,
                       "CpusetCpus": "0", "GroupAdd": ["7777"]},
        "Mounts": [
            {"Type": "bind", "Source": "/srv/data", "Destination": "/data", "RW": False, "Propagation": "rslave",
             "Mode": ""},
            {"Type": "bind", "Source": "/root/iv/" + "c" * 64 + "/rootfs", "Destination": "/img", "RW": False},
            {"Type": "volume", "Source": "/var/lib/docker/volumes/x", "Destination": "/anon", "RW": True},
        ],
    }
    inspect.update(overrides)
    return inspect


def test_status_from_inspect() -> None:
    image = {"RepoTags": ["127.0.0.1:5000/dspy/busybox:1.0"], "RepoDigests": ["127.0.0.1:5000/dspy/busybox@sha256:" + "d" * 64]}
    status = convert.status_of(inspect_of(), image, "/root/iv")
    assert status.id == "f" * 64
    assert (status.metadata.name, status.metadata.attempt) == ("app", 2)
    assert status.state == api.CONTAINER_RUNNING
    assert status.created_at == convert.parse_docker_time(CREATED)
    assert status.image.image == "127.0.0.1:5000/dspy/busybox:1.0"
    assert status.image.user_specified_image == "busybox:1.0"
    assert status.image_ref == "docker-pullable://127.0.0.1:5000/dspy/busybox@sha256:" + "d" * 64
    assert status.image_id == "sha256:" + "b" * 64
    assert dict(status.labels) == {"app": "web"} and dict(status.annotations) == {"note": "x"}
    assert status.log_path == "/logs/app/2.log"
    assert [(m.container_path, m.host_path, m.readonly, m.propagation) for m in status.mounts] == [
        ("/data", "/srv/data", True, api.PROPAGATION_HOST_TO_CONTAINER), ("/img", "", True, api.PROPAGATION_PRIVATE)]
    assert status.mounts[1].image.image_ref == "sha256:" + "c" * 64
    assert status.resources.linux.cpu_shares == 512 and status.resources.linux.memory_limit_in_bytes == 1 << 30
    assert status.resources.linux.oom_score_adj == 10
    assert (status.user.linux.uid, status.user.linux.gid, list(status.user.linux.supplemental_groups)) == (1234, 5678, [7777])
    assert status.stop_signal == api.SIGQUIT


def test_status_user_from_the_running_process_and_unknowable_names() -> None:
    proc = "Name:\tsh\nUid:\t1234\t1234\t1234\t1234\nGid:\t5678\t5678\t5678\t5678\nGroups:\t5678 7777 \n"
    user = convert.user_of(proc, "tester", None)
    assert (user.linux.uid, user.linux.gid, list(user.linux.supplemental_groups)) == (1234, 5678, [5678, 7777])
    assert convert.user_of(None, "tester", None) is None
    assert convert.user_of(None, "", None).linux.uid == 0
    assert convert.user_of(None, "²", None) is None and convert.user_of(None, "0:²", None) is None
    assert list(convert.user_of(None, "0:0", ["²", "7"]).linux.supplemental_groups) == [7]


def test_the_process_identity_is_the_part_of_its_status_the_user_comes_from() -> None:
    """Only these lines: the rest (memory, context switches) changes by itself and would defeat the kept status."""
    from dockershim_py.container import ContainerService

    identity = ContainerService._process_identity(os.getpid())
    assert [line.split(":")[0] for line in identity.splitlines()] == ["Uid", "Gid", "Groups"]
    assert convert.user_of(identity, "", None).linux.uid == os.getuid()
    assert ContainerService._process_identity(0) is None


def test_status_of_an_image_without_digest_and_a_foreign_container() -> None:
    status = convert.status_of(inspect_of(), None, "/root/iv")
    assert status.image_ref == "docker://sha256:" + "b" * 64
    assert status.image.image == "sha256:" + "b" * 64
    with pytest.raises(ValueError):
        convert.status_of(inspect_of(Config={"Labels": {}}), None, "")


def test_verbose_info_is_json_with_the_docker_side() -> None:
    info = json.loads(convert.verbose_info(inspect_of(), {"finished": False})["info"])
    assert info["pid"] == 42 and info["sandboxID"] == SANDBOX_ID and info["criLog"] == {"finished": False}


# --- list --------------------------------------------------------------------------------------------


def list_entry(state: str = "running", **overrides) -> dict:
    entry = {
        "Id": "f" * 64, "Names": ["/k8s_app_web_shop_uid-1_2"], "Image": "busybox:1.0", "ImageID": "sha256:" + "b" * 64,
        "Created": 1795341600, "State": state,
        "Labels": labels.container_labels({"app": "web"}, {}, SANDBOX_ID, "/l"),
    }
    entry.update(overrides)
    return entry


@pytest.mark.parametrize(
    ("docker_state", "cannot_run", "expected"),
    [("running", False, api.CONTAINER_RUNNING), ("exited", False, api.CONTAINER_EXITED),
     ("created", False, api.CONTAINER_CREATED), ("created", True, api.CONTAINER_EXITED),
     ("dead", False, api.CONTAINER_EXITED), ("weird", False, api.CONTAINER_UNKNOWN)],
)
def test_list_states(docker_state, cannot_run, expected) -> None:
    assert convert.container_from_list_entry(list_entry(docker_state), cannot_run).state == expected


def test_list_entry_and_filters() -> None:
    container = convert.container_from_list_entry(list_entry())
    assert container.pod_sandbox_id == SANDBOX_ID
    assert container.image_ref == container.image_id == "sha256:" + "b" * 64  # what image GC compares with Image.id
    assert container.created_at == 1795341600 * 1_000_000_000
    assert dict(container.labels) == {"app": "web"}
    assert convert.container_from_list_entry(list_entry(Names=["/someone_elses"])) is None
    assert convert.matches_filter(container, api.ContainerFilter(id="fff", pod_sandbox_id="aaa"))
    assert not convert.matches_filter(container, api.ContainerFilter(id="ff0"))
    assert not convert.matches_filter(container, api.ContainerFilter(state=api.ContainerStateValue(state=api.CONTAINER_EXITED)))
    assert not convert.matches_filter(container, api.ContainerFilter(label_selector={"app": "db"}))


def test_the_initial_identity_is_resolved_as_runc_resolves_it() -> None:
    known = Accounts(users=(Account("root", 0, 0), Account("tester", 1234, 5678)),
                     groups=(Group("root", 0, ("root",)), Group("wheel", 10, ("root",)), Group("image", 50000, ("tester",)),
                             Group("staff", 600, ())))

    def never() -> Accounts:
        raise AssertionError("numeric ids need no accounts")

    assert initial_identity("1000:2000", ["3000", "2000"], never) == (1000, 2000, [2000, 3000])
    assert initial_identity("", [], lambda: known) == (0, 0, [0, 10])
    assert initial_identity("tester", ["7777"], lambda: known) == (1234, 5678, [5678, 50000, 7777])
    assert initial_identity("1234", [], lambda: known) == (1234, 5678, [5678, 50000])
    assert initial_identity("tester:staff", [], lambda: known) == (1234, 600, [600])
    assert initial_identity("tester:600", [], lambda: known) == (1234, 600, [600])  # Strict names the gid so
    assert initial_identity("999", [], lambda: known) == (999, 0, [0])  # unknown uid: group 0, as runc
    assert initial_identity("nobody", [], lambda: known) is None  # Docker fails the start
    assert initial_identity("tester:nogroup", [], lambda: known) is None
    assert convert.initial_user_of("1234:5678:5678,50000").linux.supplemental_groups == [5678, 50000]
    assert convert.initial_user_of("") is None and convert.initial_user_of("1:x:") is None


# Found by mutation testing: behaviour no test above pinned -----------------------------------


def test_the_create_body_carries_the_mounts_and_the_user() -> None:
    """Pod volumes (secrets, the service account token) and runAsUser reach Docker's create body."""
    config = container_config(
        mounts=[api.Mount(container_path="/data", host_path="/srv/data"),
                api.Mount(container_path="/z", host_path="/srv/z", selinux_relabel=True)],
        linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
            run_as_user=api.Int64Value(value=1234))))
    body = body_of(config, node=NodeView(selinux_enabled=True))
    assert [mount["Target"] for mount in body["HostConfig"]["Mounts"]] == ["/data"]
    assert body["HostConfig"]["Binds"] == ["/srv/z:/z:rw,Z"]
    assert body["User"] == "1234"


def test_a_swap_limit_equal_to_the_memory_limit_is_no_swap() -> None:
    """What the kubelet sends on cgroup v1 for every container with a memory limit."""
    body = convert.docker_resources(api.LinuxContainerResources(memory_limit_in_bytes=100,
                                                                memory_swap_limit_in_bytes=100), True)
    assert (body["Memory"], body["MemorySwap"]) == (100, 100)


@pytest.mark.parametrize(("host_path", "container_path"), [("/a,ro", "/t"), ("/a", "/t:ro"), ("/a:/etc", "/t"),
                                                           ("relative/dir", "/t")])
def test_a_bind_path_that_would_add_options_or_name_a_volume_is_refused(host_path: str, container_path: str) -> None:
    """A relabelled mount goes in Docker's Binds string, where ':' and ',' separate options."""
    for relabel in (True, False) if host_path.startswith("relative") else (True,):
        with pytest.raises(CRIError):
            convert.docker_mounts([api.Mount(container_path=container_path, host_path=host_path,
                                             selinux_relabel=relabel)], {}, NodeView(selinux_enabled=True))
