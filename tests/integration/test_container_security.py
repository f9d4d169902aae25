"""The container security context, observed from inside the container on the real daemon."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import docker
import grpc
import pytest

from conftest import BUSYBOX, USER_UID_IMAGE, host_has_capability, wait_for
from containers_fixtures import Pod, pod, rpc_error  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api
from dockershim_py.image_accounts import ACCOUNT_FILES_LABEL
from dockershim_py.security_context import CAPABILITIES

CAP_SYS_RESOURCE = 24
Profile = api.SecurityProfile


def context(**fields) -> api.LinuxContainerConfig:
    return api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(**fields))


def proc_status(pod: Pod, container_id: str) -> dict[str, str]:
    text = pod.sh(container_id, "cat /proc/self/status")
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def capabilities(pod: Pod, container_id: str) -> set[str]:
    effective = int(proc_status(pod, container_id)["CapEff"], 16)
    return {name for number, name in enumerate(CAPABILITIES) if effective >> number & 1}


@pytest.fixture
def run(pod: Pod):
    """Run containers in the module's pod; each is removed after the test."""
    made: list[str] = []

    def start(name: str, linux: api.LinuxContainerConfig, **fields) -> str:
        container_id = pod.run(name, linux=linux, **fields)
        made.append(container_id)
        return container_id

    yield start
    for container_id in made:
        pod.remove(container_id)


def test_user_group_and_supplemental_groups(pod: Pod, run) -> None:
    """Merge, the default, with a group named: the image's /etc/group lists tester in imagegroup
    (50000), which Docker would drop for a `uid:gid` user."""
    container_id = run("ids", context(run_as_user=api.Int64Value(value=1234), run_as_group=api.Int64Value(value=5678),
                                      supplemental_groups=[7777]))
    assert pod.sh(container_id, "id -u; id -g; id -G").split() == ["1234", "5678", "5678", "7777", "50000"]
    user = pod.status(container_id).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (1234, 5678, [5678, 7777, 50000])


def test_the_reported_user_is_the_one_the_process_starts_with(pod: Pod) -> None:
    """kubelet 1.31+ copies it into the pod status, exited containers too: created, running and
    exited report the same identity, named users and the primary group included."""
    def user(container_id: str) -> tuple[int, int, list[int]]:
        linux = pod.status(container_id).user.linux
        return linux.uid, linux.gid, list(linux.supplemental_groups)

    for security, expected in ((context(), (0, 0, [0])),
                               (context(run_as_username="tester"), (1234, 5678, [5678, 50000]))):
        container_id = pod.create(pod.container_config("initial-user", ["sh", "-c", "read line"], stdin=True,
                                                       linux=security))
        try:
            seen = [user(container_id)]
            pod.start(container_id)
            seen.append(user(container_id))
            assert sorted(int(gid) for gid in pod.sh(container_id, "id -G").split()) == sorted(expected[2])
            pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)
            seen.append(user(container_id))
            assert seen == [expected] * 3
        finally:
            pod.remove(container_id)


@pytest.mark.parametrize(("policy", "expected"), [(api.Merge, [5678, 7777, 50000]), (api.Strict, [5678, 7777])])
@pytest.mark.parametrize("user", ["run_as_user", "image USER"])
def test_supplemental_groups_policy(pod: Pod, run, docker_api: docker.APIClient, policy: int, expected: list[int],
                                    user: str) -> None:
    """critest's case: the user alone (no group) is given, so only Strict needs the image's /etc/passwd."""
    docker_api.pull(USER_UID_IMAGE)
    security = context(supplemental_groups=[7777], supplemental_groups_policy=policy,
                       **({"run_as_user": api.Int64Value(value=1234)} if user == "run_as_user" else {}))
    container_id = run(f"groups-{policy}-{user.replace(' ', '-').replace('_', '-').lower()}", security,
                       image=api.ImageSpec(image=BUSYBOX if user == "run_as_user" else USER_UID_IMAGE),
                       command=["sh", "-c", "id -G; sleep 300"])
    first = wait_for(lambda: [text for _, _, _, text in pod.log_lines(pod.log_file(container_id))], timeout=10)
    assert sorted(int(gid) for gid in first[0].split()) == expected
    assert sorted(int(gid) for gid in pod.sh(container_id, "id -G").split()) == expected  # an exec is the same
    linux = pod.status(container_id).user.linux
    assert (linux.uid, linux.gid, sorted(linux.supplemental_groups)) == (1234, 5678, expected)
    assert not docker_api.containers(all=True, filters={"label": f"{ACCOUNT_FILES_LABEL}=true"})  # the probe is gone


def test_an_image_whose_users_cannot_be_read_fails_strict_only(pod: Pod, run, docker_api: docker.APIClient) -> None:
    """An /etc/passwd over 1 MiB is not read: Merge falls back to Docker's groups, Strict says why it cannot."""
    tag = "dspy-test/huge-passwd:1"
    dockerfile = f"FROM {BUSYBOX}\nRUN yes '# a comment line, as long as some' | head -n 40000 >> /etc/passwd\n"
    list(docker_api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none"))
    try:
        merged = run("huge-passwd-merge", context(run_as_user=api.Int64Value(value=1234),
                                                  run_as_group=api.Int64Value(value=5678)), image=api.ImageSpec(image=tag))
        assert pod.sh(merged, "id -G").split() == ["5678"]
        code, message = rpc_error(pod.create, pod.container_config(
            "huge-passwd-strict", image=api.ImageSpec(image=tag),
            linux=context(run_as_user=api.Int64Value(value=1234), supplemental_groups_policy=api.Strict)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "Strict needs the users of image" in message and "over 1048576 bytes" in message
    finally:
        for entry in docker_api.containers(all=True, filters={"ancestor": tag}):
            docker_api.remove_container(entry["Id"], force=True)
        docker_api.remove_image(tag, force=True)


def test_the_runtime_says_it_supports_supplemental_groups_policy(pod: Pod) -> None:
    assert pod.runtime.Status(api.StatusRequest(), timeout=10).features.supplemental_groups_policy


def test_username(pod: Pod, run) -> None:
    container_id = run("named", context(run_as_username="tester"))
    assert pod.sh(container_id, "id -un; id -u; id -g").split() == ["tester", "1234", "5678"]


def test_capabilities_added_and_dropped(pod: Pod, run) -> None:
    default = capabilities(pod, run("default-caps", context()))
    assert "NET_ADMIN" not in default and "CHOWN" in default
    changed = capabilities(pod, run("some-caps", context(capabilities=api.Capability(
        add_capabilities=["NET_ADMIN"], drop_capabilities=["CAP_CHOWN"]))))
    assert changed == (default | {"NET_ADMIN"}) - {"CHOWN"}
    assert capabilities(pod, run("no-caps", context(capabilities=api.Capability(drop_capabilities=["ALL"])))) == set()
    everything = capabilities(pod, run("all-caps", context(capabilities=api.Capability(add_capabilities=["ALL"]))))
    assert {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_TIME", "MKNOD"} <= everything
    assert ("SYS_RESOURCE" in everything) == host_has_capability(CAP_SYS_RESOURCE)
    # As containerd: ALL added, then ALL dropped, then the named added.
    assert capabilities(pod, run("all-in-all-out", context(capabilities=api.Capability(
        add_capabilities=["ALL", "NET_ADMIN"], drop_capabilities=["ALL"])))) == {"NET_ADMIN"}
    # Capabilities newer than Docker 20.10 (which it never gives) can be dropped.
    assert capabilities(pod, run("new-caps-out", context(capabilities=api.Capability(
        drop_capabilities=["PERFMON", "BPF", "CHECKPOINT_RESTORE"])))) == default
    assert "SYS_ADMIN" in capabilities(pod, run("all-but-new", context(capabilities=api.Capability(
        add_capabilities=["ALL"], drop_capabilities=["PERFMON", "KILL"]))))


def test_readonly_rootfs_and_no_new_privs(pod: Pod, run) -> None:
    locked = run("locked", context(readonly_rootfs=True, no_new_privs=True))
    reply = pod.exec(locked, ["touch", "/written"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr
    assert proc_status(pod, locked)["NoNewPrivs"] == "1"
    free = run("free", context())
    pod.sh(free, "touch /written")
    assert proc_status(pod, free)["NoNewPrivs"] == "0"


def test_masked_and_readonly_paths(pod: Pod, run) -> None:
    masked = run("masked", context(masked_paths=["/proc/cpuinfo", "/proc/scsi"], readonly_paths=["/tmp"]))
    assert pod.sh(masked, "wc -c < /proc/cpuinfo").strip() == "0"
    reply = pod.exec(masked, ["touch", "/tmp/x"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr
    plain = run("unmasked", context())
    assert int(pod.sh(plain, "wc -c < /proc/cpuinfo")) > 0
    pod.sh(plain, "touch /tmp/x")


def test_seccomp_profiles(pod: Pod, run, tmp_path: Path) -> None:
    assert proc_status(pod, run("seccomp-default", context(seccomp=Profile(profile_type=Profile.RuntimeDefault))))[
        "Seccomp"] == "2"
    assert proc_status(pod, run("seccomp-off", context(seccomp=Profile(profile_type=Profile.Unconfined))))[
        "Seccomp"] == "0"
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))
    localhost = run("seccomp-file", context(seccomp=Profile(profile_type=Profile.Localhost, localhost_ref=str(profile))))
    reply = pod.exec(localhost, ["mkdir", "/tmp/d"])
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    code, message = rpc_error(pod.create, pod.container_config("seccomp-missing", linux=context(
        seccomp=Profile(profile_type=Profile.Localhost, localhost_ref=str(tmp_path / "absent.json")))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "absent.json" in message


def test_apparmor_from_both_fields_and_selinux_labels(pod: Pod, docker_api: docker.APIClient) -> None:
    """AppArmor and SELinux are not enabled on every node; what Docker is told is checked."""
    current = pod.create(pod.container_config("apparmor-current", linux=context(
        apparmor=Profile(profile_type=Profile.Unconfined), apparmor_profile="localhost/ignored")))
    labelled = pod.create(pod.container_config("selinux", linux=context(
        selinux_options=api.SELinuxOption(user="system_u", role="system_r", type="container_t", level="s0:c1,c2"))))
    made = [current, labelled]
    try:
        assert "apparmor=unconfined" in docker_api.inspect_container(current)["HostConfig"]["SecurityOpt"]
        assert docker_api.inspect_container(labelled)["HostConfig"]["SecurityOpt"][:4] == [
            "label=user:system_u", "label=role:system_r", "label=type:container_t", "label=level:s0:c1,c2"]
        named = [pod.container_config("apparmor-deprecated", linux=context(apparmor_profile="localhost/old")),
                 pod.container_config("apparmor-localhost", linux=context(
                     apparmor=Profile(profile_type=Profile.Localhost, localhost_ref="old")))]
        if any("name=apparmor" in option for option in docker_api.info().get("SecurityOptions") or []):
            for config in named:
                made.append(pod.create(config))
                assert "apparmor=old" in docker_api.inspect_container(made[-1])["HostConfig"]["SecurityOpt"]
        else:  # Docker would run them unconfined without a word
            for config in named:
                code, message = rpc_error(pod.create, config)
                assert code == grpc.StatusCode.FAILED_PRECONDITION and "AppArmor is not enabled" in message
    finally:
        for container_id in made:
            pod.remove(container_id)


def runtime_copes_with_privileged(docker_api) -> bool:
    """Plain runc cannot grant every capability where the bounding set lacks one; a wrapper can."""
    return host_has_capability(CAP_SYS_RESOURCE) or docker_api.info().get("DefaultRuntime") != "runc"


def test_privileged(pod: Pod, run, docker_api) -> None:
    if not runtime_copes_with_privileged(docker_api):
        pytest.skip("plain runc cannot run privileged containers on a node whose capability bounding set lacks "
                    "CAP_SYS_RESOURCE (a runc wrapper as Docker's default runtime can)")
    container_id = run("privileged", context(privileged=True, masked_paths=["/proc/cpuinfo"]))
    assert "SYS_ADMIN" in capabilities(pod, container_id)
    assert int(pod.sh(container_id, "wc -c < /proc/cpuinfo")) > 0  # no masks for privileged containers
    assert docker_api.inspect_container(container_id)["HostConfig"]["Privileged"] is True


def test_privileged_pods_run_where_runc_cannot_grant_every_capability(shim, docker_api) -> None:
    """A CNI or CSI daemon's pod still runs: every capability the node has, no profile, the node's devices."""
    if runtime_copes_with_privileged(docker_api):
        pytest.skip("Docker's own Privileged runs here (the node has every capability, or a runc wrapper copes)")
    privileged_pod = Pod(shim.runtime, docker_api, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(privileged=True, run_as_user=api.Int64Value(value=0))))
    try:
        container_id = privileged_pod.run("privileged", linux=context(
            privileged=True, masked_paths=["/proc/timer_list"],
            seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)))
        # Up to AUDIT_READ: Docker 20.10 knows no newer one, and does not give them to Privileged either.
        granted = capabilities(privileged_pod, container_id)
        assert set(CAPABILITIES[:CAPABILITIES.index("AUDIT_READ") + 1]) - {"SYS_RESOURCE"} <= granted
        assert "SYS_RESOURCE" not in granted
        status = proc_status(privileged_pod, container_id)
        assert status["Seccomp"] == "0"
        assert privileged_pod.exec(container_id, ["test", "-c", "/dev/kmsg"]).exit_code == 0  # the node's devices
        assert privileged_pod.exec(container_id, ["head", "-c", "1", "/dev/kmsg"]).exit_code == 0
        assert privileged_pod.exec(container_id, ["test", "-e", "/dev/shm"]).exit_code == 0  # Docker's own /dev kept
        # No masked or read-only /proc paths: the pod's own network namespace takes a sysctl.
        privileged_pod.sh(container_id, "echo 1 > /proc/sys/net/ipv4/tcp_syncookies")
        assert int(privileged_pod.sh(container_id, "wc -c < /proc/timer_list")) > 0  # Docker masks it by default
        assert "privileged" in shim.log() and "cannot run on this node" in shim.log()
        verbose = shim.runtime.ContainerStatus(
            api.ContainerStatusRequest(container_id=container_id, verbose=True), timeout=10)
        info = json.loads(verbose.info["info"])
        assert (info["privileged"], info["privilegedInParts"]) == (True, True)
        assert not [key for key in verbose.status.labels if "dockershim-py" in key]
    finally:
        privileged_pod.close()


def test_pid_namespaces(pod: Pod, run) -> None:
    shared = run("pid-pod", context(namespace_options=api.NamespaceOption(pid=api.POD)))
    assert pod.sh(shared, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == "/pause"
    own = run("pid-own", context(namespace_options=api.NamespaceOption(pid=api.CONTAINER)))
    assert pod.sh(own, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == "sleep 3600"
    target = run("pid-target", context(namespace_options=api.NamespaceOption(pid=api.TARGET, target_id=own)))
    assert pod.sh(target, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == "sleep 3600"
    host = run("pid-host", context(namespace_options=api.NamespaceOption(pid=api.NODE)))
    assert pod.sh(host, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == \
        Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_a_pid_namespace_target_must_be_a_running_container_of_the_pod(pod: Pod, run, shim, docker_api) -> None:
    """Else a container could see and signal another pod's processes."""
    other_pod = Pod(shim.runtime, docker_api)
    try:
        stranger = other_pod.run("stranger")
        stopped = pod.create(pod.container_config("pid-stopped"))
        for target_id, code, words in (
                (stranger, grpc.StatusCode.INVALID_ARGUMENT, "is not a container of pod sandbox"),
                (pod.id, grpc.StatusCode.INVALID_ARGUMENT, "is not a container of pod sandbox"),
                (stopped, grpc.StatusCode.FAILED_PRECONDITION, "is not running"),
                ("f" * 64, grpc.StatusCode.NOT_FOUND, "no such container")):
            got_code, message = rpc_error(pod.create, pod.container_config("pid-target-bad", linux=context(
                namespace_options=api.NamespaceOption(pid=api.TARGET, target_id=target_id))))
            assert (got_code, words in message) == (code, True), message
        assert other_pod.status(stranger).state == api.CONTAINER_RUNNING
        assert not [c for c in docker_api.containers(all=True, filters={"name": "pid-target-bad"})]
    finally:
        other_pod.close()


def test_host_network_pod_shares_the_hostname(shim, docker_api: docker.APIClient) -> None:
    host_pod = Pod(shim.runtime, docker_api, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(network=api.NODE))))
    try:
        container_id = host_pod.run("hostnet")
        assert host_pod.sh(container_id, "hostname").strip() == socket.gethostname()
        assert docker_api.inspect_container(container_id)["HostConfig"]["UTSMode"] == "host"
    finally:
        host_pod.close()
