"""Mounts (read-only, missing host paths, propagation), devices and image volumes on the real daemon."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from conftest import BUSYBOX, wait_for
from containers_fixtures import Pod, pod, rpc_error  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api

Profile = api.SecurityProfile


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory on the host; whatever a test mounts below it is unmounted afterwards."""
    path = Path(tempfile.mkdtemp(prefix="dspy-mount-"))
    yield path
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if line.split()[4].startswith(f"{path}/")]
    for mountpoint in sorted(mounted, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], check=True)
    shutil.rmtree(path)


def test_read_write_read_only_and_missing_host_paths(pod: Pod, host_dir: Path) -> None:
    (host_dir / "data").mkdir()
    (host_dir / "data" / "flag").write_text("from the host\n")
    missing = host_dir / "created" / "by" / "the-shim"
    container_id = pod.run("binds", mounts=[
        api.Mount(container_path="/rw", host_path=str(host_dir / "data")),
        api.Mount(container_path="/ro", host_path=str(host_dir / "data"), readonly=True),
        api.Mount(container_path="/new", host_path=str(missing)),
    ])
    assert pod.sh(container_id, "cat /ro/flag; echo written > /rw/out") == "from the host\n"
    assert (host_dir / "data" / "out").read_text() == "written\n"
    reply = pod.exec(container_id, ["touch", "/ro/denied"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr
    assert missing.is_dir()
    mounts = {mount.container_path: mount for mount in pod.status(container_id).mounts}
    assert mounts["/ro"].readonly and not mounts["/rw"].readonly
    assert mounts["/new"].host_path == str(missing)
    pod.remove(container_id)


def test_a_host_path_the_node_cannot_make_is_a_failed_precondition(pod: Pod, host_dir: Path) -> None:
    (host_dir / "a-file").write_text("")
    for host_path in (host_dir / "a-file" / "below", Path("/proc/dspy-host-path")):
        code, details = rpc_error(pod.create, pod.container_config("unmade", mounts=[
            api.Mount(container_path="/x", host_path=str(host_path))]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "cannot create host path" in details, details


def test_read_only_is_not_recursive(pod: Pod, host_dir: Path) -> None:
    """Kubernetes' read-only means the top mount only; a mount below it stays writable (cri-dockerd#309)."""
    (host_dir / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(host_dir / "sub")], check=True)
    container_id = pod.run("nonrecursive", mounts=[api.Mount(container_path="/ro", host_path=str(host_dir),
                                                             readonly=True)])
    pod.sh(container_id, "touch /ro/sub/writable")
    assert pod.exec(container_id, ["touch", "/ro/denied"]).exit_code != 0
    pod.remove(container_id)


def test_mount_propagation(pod: Pod, host_dir: Path) -> None:
    shared = host_dir / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    mounter = api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["SYS_ADMIN"]),
        seccomp=Profile(profile_type=Profile.Unconfined), apparmor=Profile(profile_type=Profile.Unconfined)))
    private = pod.run("private", mounts=[api.Mount(container_path="/m", host_path=str(shared))])
    slave = pod.run("slave", mounts=[api.Mount(container_path="/m", host_path=str(shared),
                                               propagation=api.PROPAGATION_HOST_TO_CONTAINER)])
    bidirectional = pod.run("bidirectional", linux=mounter, mounts=[api.Mount(
        container_path="/m", host_path=str(shared), propagation=api.PROPAGATION_BIDIRECTIONAL)])

    # The host mounts below the shared mount: HostToContainer and Bidirectional see it, private does not.
    (shared / "from-host").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared / "from-host")], check=True)
    (shared / "from-host" / "file").write_text("host\n")
    assert pod.sh(slave, "cat /m/from-host/file") == "host\n"
    assert pod.sh(bidirectional, "cat /m/from-host/file") == "host\n"
    assert pod.exec(private, ["cat", "/m/from-host/file"]).exit_code != 0

    # The container mounts below it: only Bidirectional reaches the host.
    pod.sh(bidirectional, "mkdir -p /m/from-container && mount -t tmpfs tmpfs /m/from-container && "
                          "echo container > /m/from-container/file")
    assert wait_for(lambda: (shared / "from-container" / "file").exists(), timeout=5)
    assert (shared / "from-container" / "file").read_text() == "container\n"
    statuses = {name: pod.status(cid).mounts[0].propagation
                for name, cid in (("private", private), ("slave", slave), ("bidirectional", bidirectional))}
    assert statuses == {"private": api.PROPAGATION_PRIVATE, "slave": api.PROPAGATION_HOST_TO_CONTAINER,
                        "bidirectional": api.PROPAGATION_BIDIRECTIONAL}
    for container_id in (private, slave, bidirectional):
        pod.remove(container_id)


def test_devices(pod: Pod) -> None:
    container_id = pod.run("devices", devices=[
        api.Device(host_path="/dev/null", container_path="/dev/writable-null", permissions="rwm"),
        api.Device(host_path="/dev/loop-control", container_path="/dev/readonly-loop", permissions="r"),
    ])
    pod.sh(container_id, "echo x > /dev/writable-null; : < /dev/readonly-loop")
    reply = pod.exec(container_id, ["sh", "-c", ": > /dev/readonly-loop"])  # the device cgroup refuses writing
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    pod.remove(container_id)


# --- image volumes ----------------------------------------------------------------------------------


def image_mount(path: str, image: str = BUSYBOX, sub_path: str = "", readonly: bool = True) -> api.Mount:
    return api.Mount(container_path=path, readonly=readonly, image=api.ImageSpec(image=image), image_sub_path=sub_path)


def test_image_volume(pod: Pod, images, shim) -> None:
    image_id = images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=BUSYBOX)), timeout=10).image.id
    container_id = pod.run("imagevol", mounts=[image_mount("/mnt/image"), image_mount("/mnt/etc", sub_path="etc")])
    pod.sh(container_id, "ls /mnt/image/bin/sh && /mnt/image/bin/ls /mnt/image >/dev/null")  # not noexec
    assert pod.sh(container_id, "grep ^tester: /mnt/etc/passwd").startswith("tester:x:1234:5678:")
    assert pod.exec(container_id, ["touch", "/mnt/image/written"]).exit_code != 0
    assert pod.exec(container_id, ["ls", "/mnt/etc/etc"]).exit_code != 0  # the sub path, not the root
    assert pod.sh(container_id, "stat -c %a /mnt/image/tmp").strip() == "1777"  # modes kept
    mounts = {mount.container_path: mount for mount in pod.status(container_id).mounts}
    assert mounts["/mnt/image"].image.image_ref == image_id
    assert mounts["/mnt/etc"].image.image_ref == image_id
    assert list((shim.root / "image-volumes").iterdir()) == [shim.root / "image-volumes" / image_id.removeprefix("sha256:")]
    pod.remove(container_id)


@pytest.mark.parametrize(
    ("mount", "code", "words"),
    [
        (image_mount("/mnt/x", readonly=False), grpc.StatusCode.INVALID_ARGUMENT, "read-only"),
        (image_mount("/mnt/x", sub_path="not-existing"), grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
        (image_mount("/mnt/x", sub_path="../../.."), grpc.StatusCode.INVALID_ARGUMENT, "outside"),
        (image_mount("/mnt/x", image="127.0.0.1:5000/dspy/absent:1"), grpc.StatusCode.NOT_FOUND, "pull it first"),
        # A newer kubelet's noexec that Docker's binds cannot take: refused, never left out.
        (api.Mount(container_path="/mnt/x", host_path="/tmp", mount_options=["noexec"]),
         grpc.StatusCode.INVALID_ARGUMENT, "mount options noexec are not supported"),
    ],
)
def test_mount_refusals(pod: Pod, mount, code, words) -> None:
    got_code, message = rpc_error(pod.create, pod.container_config("badvol", mounts=[mount]))
    assert got_code == code and words in message


def test_image_volume_of_a_removed_image_is_cleaned_up(pod: Pod, docker_api: docker.APIClient, shim) -> None:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as archive:
        data = secrets.token_hex(8).encode()
        member = tarfile.TarInfo("data/hello.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    tag = f"dspy-volume-only:{secrets.token_hex(4)}"
    docker_api.import_image_from_data(payload.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    image_id = docker_api.inspect_image(tag)["Id"]
    try:
        container_id = pod.run("tempvol", mounts=[image_mount("/mnt/tmp", image=tag, sub_path="data")])
        assert pod.sh(container_id, "cat /mnt/tmp/hello.txt") == data.decode()
        directory = shim.root / "image-volumes" / image_id.removeprefix("sha256:")
        assert directory.is_dir()
        docker_api.remove_image(tag)
        pod.remove(container_id)
        assert not directory.exists()
    finally:
        try:
            docker_api.remove_image(image_id, force=True)
        except docker.errors.NotFound:
            pass
    assert not [c for c in docker_api.containers(all=True) if c["Names"][0].startswith("/dockershim-py-image-volume")]
    assert os.path.isdir(shim.root / "image-volumes")


def test_a_request_refused_for_another_reason_exports_no_image_volume(pod: Pod, docker_api: docker.APIClient,
                                                                      shim) -> None:
    """An export copies a whole image: not for a create that is refused anyway."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as archive:
        member = tarfile.TarInfo("data/hello.txt")
        archive.addfile(member, io.BytesIO(b""))
    tag = f"dspy-volume-unused:{secrets.token_hex(4)}"
    docker_api.import_image_from_data(payload.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    image_id = docker_api.inspect_image(tag)["Id"]
    try:
        code, message = rpc_error(pod.create, pod.container_config(
            "refusedvol", mounts=[image_mount("/mnt/tmp", image=tag)], working_dir="relative"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "working_dir" in message
        assert not (shim.root / "image-volumes" / image_id.removeprefix("sha256:")).exists()
    finally:
        docker_api.remove_image(image_id, force=True)
