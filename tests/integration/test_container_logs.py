"""CRI-format container logs on the real daemon: the format, partial lines, rotation, restarts, crictl."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import grpc

from conftest import BUSYBOX, CRICTL, Shim, needs_crictl, wait_for
from containers_fixtures import Pod, pod, rpc_error  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api


def numbered(count: int, pause_every: int = 0) -> list[str]:
    """A shell command printing `line 0` .. `line count-1`, pausing 10 ms every `pause_every` lines."""
    pause = f"[ $((i % {pause_every})) -eq 0 ] && usleep 10000; " if pause_every else ""
    return ["sh", "-c", f"i=0; while [ $i -lt {count} ]; do echo line $i; {pause}i=$((i+1)); done"]


def texts(pod: Pod, *paths: Path) -> list[str]:
    """The log's lines, partial ones joined, across files in order."""
    joined, pending = [], ""
    for path in paths:
        for _, _, tag, text in pod.log_lines(path):
            pending += text
            if tag == "F":
                joined.append(pending)
                pending = ""
    return joined + ([pending] if pending else [])


def test_format_streams_and_partial_lines(pod: Pod) -> None:
    script = "echo out; echo err >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; printf 'no newline at the end'"
    container_id = pod.run("format", ["sh", "-c", script])
    pod.exited(container_id)  # the log is complete once the container is reported exited
    lines = pod.log_lines(pod.log_file(container_id))
    # Docker copies the two streams apart, so only each stream's own order is certain.
    stdout = [(tag, text) for _, stream, tag, text in lines if stream == "stdout"]
    assert [(tag, text) for _, stream, tag, text in lines if stream == "stderr"] == [("F", "err")]
    assert stdout[0] == ("F", "out")
    assert [tag for tag, _ in stdout[1:-1]] == ["P", "F"]  # Docker splits lines at 16 KiB
    assert "".join(text for _, text in stdout[1:-1]) == "a" * 20000
    assert stdout[-1] == ("P", "no newline at the end")
    assert all(stamp.endswith("Z") for stamp, _, _, _ in lines)
    pod.remove(container_id)
    assert pod.log_directory.joinpath("format/0.log").exists()  # the kubelet removes logs, not the runtime


def test_a_label_cannot_choose_where_the_log_goes(pod: Pod, tmp_path: Path) -> None:
    """With no log_path the container has no CRI log; a label naming one is the caller's, not the shim's."""
    target = tmp_path / "not-a-log"
    target.write_text("kept\n")
    config = pod.container_config("forged", ["echo", "written"], log_path="",
                                  labels={"io.kubernetes.container.logpath": str(target)})
    container_id = pod.create(config)
    pod.start(container_id)
    pod.exited(container_id)
    assert target.read_text() == "kept\n"
    assert pod.docker.inspect_container(container_id)["Config"]["Labels"]["io.kubernetes.container.logpath"] == ""
    pod.remove(container_id)


def test_reopen_after_rotation_loses_no_line(pod: Pod) -> None:
    count = 3000
    container_id = pod.run("rotating", numbered(count, pause_every=30))
    current = pod.log_file(container_id)
    rotated = []
    for number in range(4):
        assert wait_for(lambda: current.exists() and current.stat().st_size > 0, timeout=10)
        renamed = current.with_name(f"{current.name}.{number}")
        os.rename(current, renamed)  # the kubelet's rotation: rename, then ask for a reopen
        rotated.append(renamed)
        try:
            pod.runtime.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=container_id), timeout=10)
        except grpc.RpcError as exc:  # the container finished early: the last rename holds the rest
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            break
        assert current.exists()
    pod.exited(container_id)
    files = rotated + ([current] if current.exists() else [])
    assert texts(pod, *files) == [f"line {n}" for n in range(count)]
    assert len(rotated) >= 2
    code, _ = rpc_error(pod.runtime.ReopenContainerLog,
                        api.ReopenContainerLogRequest(container_id=container_id), timeout=10)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    pod.remove(container_id)


def test_dockers_own_rotation_is_followed(start_shim, docker_api: docker.APIClient) -> None:
    """Docker rotates its json-file log (here every 64 KiB, about 1000 lines); the copier follows each file."""
    shim = start_shim(["--docker-log-max-size", "64k", "--docker-log-max-files", "3"])
    pod = Pod(shim.runtime, docker_api)
    try:
        count = 2400
        container_id = pod.run("chatty", numbered(count, pause_every=8))
        assert docker_api.inspect_container(container_id)["HostConfig"]["LogConfig"]["Config"]["max-size"] == "64k"
        pod.exited(container_id, timeout=60)
        assert texts(pod, pod.log_file(container_id)) == [f"line {n}" for n in range(count)]
        log_path = docker_api.inspect_container(container_id)["LogPath"]
        assert os.path.exists(f"{log_path}.2")  # rotated at least twice
    finally:
        pod.close()


@contextlib.contextmanager
def crashing_shim(docker_api: docker.APIClient) -> Iterator[tuple[Pod, Path, Callable[..., None]]]:
    """A pod on a shim with a root directory of its own, and `crash_and_restart(while_down)`:
    SIGKILL (no position saved on the way out), then a second shim on the same root serving the pod."""
    root = Path(tempfile.mkdtemp(prefix="dspy-shim-root-"))
    shims = [Shim(["--root-directory", str(root)]).start()]
    pod = Pod(shims[0].runtime, docker_api)

    def crash_and_restart(while_down: Callable[[], object] = lambda: None) -> None:
        shims[0].stop(signal.SIGKILL)
        time.sleep(0.5)
        while_down()
        shims.append(Shim(["--root-directory", str(root)]).start())
        pod.runtime = shims[-1].runtime

    try:
        yield pod, root, crash_and_restart
    finally:
        if len(shims) == 1:
            crash_and_restart()
        pod.close()
        for shim in shims:
            shim.stop()
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_a_restarted_shim_resumes_without_losing_or_repeating(docker_api: docker.APIClient) -> None:
    with crashing_shim(docker_api) as (pod, _, crash_and_restart):
        count = 1500
        container_id = pod.run("survivor", numbered(count, pause_every=5))
        log_file = pod.log_file(container_id)
        assert wait_for(lambda: log_file.exists() and log_file.stat().st_size > 0, timeout=10)
        crash_and_restart()
        pod.exited(container_id, timeout=60)
        assert texts(pod, log_file) == [f"line {n}" for n in range(count)]


def test_an_images_labels_choose_no_log_file_and_remove_no_container_at_a_restart(docker_api: docker.APIClient) -> None:
    """Docker gives a container its image's labels: the shim's own must not be the image's to set."""
    target = Path(tempfile.mkdtemp(prefix="dspy-owned-")) / "owned.log"
    tag = "dspy-test/internal-labels:1"
    dockerfile = (f"FROM {BUSYBOX}\nLABEL io.kubernetes.container.logpath={target} "
                  "io.kubernetes.dockershim-py.image-volume-export=true io.kubernetes.dockershim-py.account-files=true\n")
    list(docker_api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none"))
    try:
        with crashing_shim(docker_api) as (pod, _, crash_and_restart):
            container_id = pod.run("labelled", ["sh", "-c", "echo printed; sleep 3600"], log_path="",
                                   image=api.ImageSpec(image=tag))
            time.sleep(1)
            assert pod.status(container_id).log_path == ""
            assert not target.exists()
            crash_and_restart()  # recovery removes the shim's leftover helper containers, not this one
            assert pod.status(container_id).state == api.CONTAINER_RUNNING
    finally:
        docker_api.remove_image(tag, force=True)
        subprocess.run(["rm", "-rf", str(target.parent)], check=True)


def test_a_restarted_shim_copies_a_log_whose_position_file_a_crash_left_empty(docker_api: docker.APIClient) -> None:
    """Positions are written without fsync: the running container's later lines must still arrive."""
    with crashing_shim(docker_api) as (pod, root, crash_and_restart):
        container_id = pod.run("emptied", ["sh", "-c", "echo before; until [ -e /tmp/go ]; do usleep 50000; done; "
                                                      "echo after; sleep 30"])
        log_file = pod.log_file(container_id)
        assert wait_for(lambda: texts(pod, log_file) == ["before"], timeout=10)
        crash_and_restart(while_down=lambda: (root / "logs" / f"{container_id}.json").write_bytes(b""))
        pod.sh(container_id, "touch /tmp/go")
        assert wait_for(lambda: texts(pod, log_file)[-1:] == ["after"], timeout=15), texts(pod, log_file)
        assert texts(pod, log_file) == ["before", "before", "after"]  # copied again from Docker's first line


def test_removing_the_pod_drops_its_containers_log_copy_positions(shim: Shim, docker_api: docker.APIClient) -> None:
    """RemovePodSandbox removes the pod's containers itself: their saved positions go with them,
    not at the next shim start (a node's pods come and go by the thousand)."""
    pod = Pod(shim.runtime, docker_api)
    try:
        running = pod.run("running", ["sleep", "300"])
        exited = pod.run("exited", ["true"])
        pod.exited(exited)
        positions = [shim.root / "logs" / f"{container_id}.json" for container_id in (running, exited)]
        assert all(path.exists() for path in positions)
        shim.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        assert [path.name for path in positions if path.exists()] == []
    finally:
        pod.close()


@needs_crictl
def test_crictl_reads_the_log(pod: Pod, shim: Shim) -> None:
    container_id = pod.run("crictl", ["sh", "-c", "sleep 1; echo out; echo err >&2; sleep 1; echo last"])
    crictl = [str(CRICTL), "--runtime-endpoint", shim.endpoint, "--timeout", "30s"]
    followed = subprocess.run([*crictl, "logs", "-f", container_id], capture_output=True, text=True, timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "out\nlast\n"
    assert "err\n" in followed.stderr
    stamped = subprocess.run([*crictl, "logs", "-t", container_id], capture_output=True, text=True, timeout=30)
    stamps = [line.split(" ", 1) for line in stamped.stdout.splitlines()]
    assert [text for _, text in stamps] == ["out", "last"]
    assert all(stamp.startswith("20") and stamp.endswith("Z") for stamp, _ in stamps)
    pod.remove(container_id)
