"""What a streaming session does to its Docker process when its client has gone: an exec's process
tree is killed, an attach leaves the container's own process alone."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockershim_py.docker_client import RawStream
from dockershim_py.streaming.runtime import AttachProcess, ExecProcess

EXEC_ID = "e" * 64


class DockerReportingAnExec:
    """Docker's exec inspect of `process`, as running or as ended; any other request fails the test."""

    def __init__(self, process: subprocess.Popen, container_id: str, running: bool = True) -> None:
        self.details = {"Running": running, "Pid": process.pid if running else 0, "ContainerID": container_id,
                        "ExitCode": None if running else 0}
        self.inspected: list[str] = []

    def inspect_exec(self, exec_id: str) -> dict:
        self.inspected.append(exec_id)
        return self.details


@pytest.fixture
def shell() -> Iterator[subprocess.Popen]:
    """`sh -c 'sleep 300; ...'`: a process with a child, as an exec of a shell command is."""
    process = subprocess.Popen(["sh", "-c", "sleep 300; echo never"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def stream() -> RawStream:
    ours, theirs = socket.socketpair()
    theirs.close()
    return RawStream(ours)


def own_cgroup(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().splitlines()[0]


def test_an_exec_is_terminated_with_its_children(shell: subprocess.Popen) -> None:
    docker = DockerReportingAnExec(shell, own_cgroup(shell.pid))
    process = ExecProcess(docker, "c" * 64, EXEC_ID, stream(), tty=False)  # type: ignore[arg-type]
    assert process.terminate() >= 1
    assert shell.wait(timeout=5) == -9
    assert docker.inspected == [EXEC_ID]


def test_an_exec_that_ended_or_is_outside_the_container_is_left_alone(shell: subprocess.Popen) -> None:
    ended = ExecProcess(DockerReportingAnExec(shell, own_cgroup(shell.pid), running=False),  # type: ignore[arg-type]
                        "c" * 64, EXEC_ID, stream(), tty=False)
    assert ended.terminate() == 0
    elsewhere = ExecProcess(DockerReportingAnExec(shell, "another-container"),  # type: ignore[arg-type]
                            "c" * 64, EXEC_ID, stream(), tty=False)
    assert elsewhere.terminate() == 0
    assert shell.poll() is None


def test_an_attach_never_terminates_the_container_process() -> None:
    process = AttachProcess(object(), "c" * 64, stream(), tty=False)  # type: ignore[arg-type]
    assert process.terminate() == 0  # and no Docker request: `object()` has none to make
