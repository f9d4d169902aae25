"""ExecSync's pure parts: Docker's stream framing, the output caps, and killing a process tree."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import grpc
import pytest

from dockershim_py import exec as exec_module
from dockershim_py.docker_client import DockerClient
from dockershim_py.errors import CRIError, deadline_exceeded
from dockershim_py.exec import (
    CappedOutput, Demultiplexer, ExecService, fit_reply, in_container, kill_process_tree, process_tree,
)


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=300)), max_size=20), st.integers(1, 50))
def test_demultiplexer_reassembles_any_split(frames, piece) -> None:
    wire = b"".join(frame(stream, payload) for stream, payload in frames)
    demux = Demultiplexer()
    got: dict[int, bytes] = {1: b"", 2: b""}
    for start in range(0, len(wire), piece):
        for stream, payload in demux.feed(wire[start:start + piece]):
            got[stream] += payload
    assert got[1] == b"".join(payload for stream, payload in frames if stream == 1)
    assert got[2] == b"".join(payload for stream, payload in frames if stream == 2)


def test_capped_output_keeps_the_start_and_counts_the_rest() -> None:
    output = CappedOutput(limit=10)
    for chunk in (b"12345", b"67890abc", b"def"):
        output.add(chunk)
    assert output.value() == b"1234567890"
    assert output.dropped == 6


def test_the_reply_fits_one_grpc_message() -> None:
    assert fit_reply(b"a" * 4, b"b" * 4, budget=10) == (b"a" * 4, b"b" * 4)
    assert fit_reply(b"a" * 20, b"b" * 2, budget=10) == (b"a" * 8, b"b" * 2)
    assert fit_reply(b"a" * 2, b"b" * 20, budget=10) == (b"a" * 2, b"b" * 8)
    assert fit_reply(b"a" * 20, b"b" * 20, budget=10) == (b"a" * 5, b"b" * 5)


def test_kill_process_tree_kills_children_that_would_outlive_their_parent(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    parent = subprocess.Popen(["sh", "-c", f"sleep 300 & echo $! > {marker}; sleep 300"])
    try:
        deadline = time.monotonic() + 5
        while not marker.exists() or not marker.read_text().strip() or len(process_tree(parent.pid)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        grandchild = int(marker.read_text())
        own_cgroup = Path(f"/proc/{parent.pid}/cgroup").read_text().splitlines()[0]
        assert in_container(parent.pid, own_cgroup)
        assert not in_container(parent.pid, "no-such-container-id")
        assert kill_process_tree(parent.pid, "no-such-container-id") == 0  # never a process outside the container
        assert kill_process_tree(parent.pid, own_cgroup) == 3
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{grandchild}").exists() and "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
            assert time.monotonic() < deadline, "the grandchild survived"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, 9)
            parent.wait()


class DockerSlowToStartExecs:
    """Its exec start times out, and the process starts anyway a moment later (a busy dockerd).

    `running_before_pid`: in the moment before, Docker says the exec runs but gives no Pid yet.
    """

    full_id = DockerClient.full_id  # the wrapper's: a whole ID is taken as it is

    def __init__(self, process: subprocess.Popen, container_id: str, running_before_pid: bool = False) -> None:
        self.process = process
        self.container_id = container_id
        self.running_before_pid = running_before_pid
        self.inspects = 0

    def inspect_container(self, container_id: str) -> dict:
        return {"Id": container_id, "Config": {"Labels": {"io.kubernetes.docker.type": "container"}}}

    def create_exec(self, container_id: str, cmd: list[str]) -> str:
        return "e" * 64

    def start_exec(self, exec_id: str, timeout: float) -> None:
        raise deadline_exceeded(f"start exec {exec_id}: Docker did not answer in {timeout:g}s")

    def inspect_exec(self, exec_id: str) -> dict:
        self.inspects += 1
        if self.inspects < 3:
            return {"Running": self.running_before_pid, "Pid": 0, "ExitCode": None}
        return {"Running": True, "Pid": self.process.pid, "ContainerID": self.container_id, "ExitCode": None}


@pytest.fixture
def probe() -> Iterator[tuple[subprocess.Popen, str]]:
    """A process standing for an exec's command, and the cgroup line its container is found by."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process, Path(f"/proc/{process.pid}/cgroup").read_text().splitlines()[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_exec_that_starts_after_execsync_gave_up_is_killed(monkeypatch, probe) -> None:
    monkeypatch.setattr(exec_module, "LATE_START_POLL_SECONDS", 0.01)
    process, own_cgroup = probe
    with pytest.raises(CRIError) as raised:
        ExecService(DockerSlowToStartExecs(process, own_cgroup)).exec_sync("c" * 64, ["sleep", "300"], timeout=1)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert process.wait(timeout=10) == -9


class DockerWithALostConnection:
    """An exec whose stream Docker's restart resets mid-read."""

    full_id = DockerClient.full_id  # the wrapper's: a whole ID is taken as it is

    def __init__(self) -> None:
        self.inspected = 0

    def inspect_container(self, container_id: str) -> dict:
        return {"Id": container_id, "Config": {"Labels": {"io.kubernetes.docker.type": "container"}}}

    def create_exec(self, container_id: str, cmd: list[str]) -> str:
        return "e" * 64

    def start_exec(self, exec_id: str, timeout: float) -> "ResetStream":
        return ResetStream()

    def inspect_exec(self, exec_id: str) -> dict:
        self.inspected += 1
        return {"Running": False, "Pid": 0, "ExitCode": 137}


class ResetStream:
    def recv(self, size: int, timeout: float | None) -> bytes:
        raise ConnectionResetError(104, "Connection reset by peer")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_connection_lost_mid_exec_is_unavailable_not_an_internal_error() -> None:
    with pytest.raises(CRIError) as raised:
        ExecService(DockerWithALostConnection()).exec_sync("c" * 64, ["sleep", "300"], timeout=5)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and "connection to Docker lost" in raised.value.message


def test_a_cancel_registered_too_late_ends_the_exec_at_once() -> None:
    """The caller left while the exec started: it is not waited for."""
    docker = DockerWithALostConnection()
    with pytest.raises(CRIError) as raised:
        ExecService(docker).exec_sync("c" * 64, ["sleep", "300"], timeout=5, register_cancel=lambda cancel: False)
    assert raised.value.code == grpc.StatusCode.CANCELLED


class FramedStream:
    """Docker's multiplexed output, then the end of the stream."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self.data = b"".join(bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload
                             for kind, payload in frames)

    def recv(self, size: int, timeout: float | None) -> bytes:
        data, self.data = self.data[:size], self.data[size:]
        return data

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


class DockerWithFramedOutput(DockerWithALostConnection):
    def start_exec(self, exec_id: str, timeout: float) -> FramedStream:
        return FramedStream([(1, b"out\n"), (2, b"err\n"), (3, b"Docker: the exec failed\n")])

    def inspect_exec(self, exec_id: str) -> dict:
        return {"Running": False, "Pid": 0, "ExitCode": 1}


def test_dockers_own_error_stream_is_stderr_not_the_commands_stdout() -> None:
    assert ExecService(DockerWithFramedOutput()).exec_sync("c" * 64, ["x"], timeout=5) == (
        b"out\n", b"err\nDocker: the exec failed\n", 1)


def test_an_exec_left_at_once_is_killed_once_docker_records_its_pid() -> None:
    """A client that leaves right after the start (Ctrl-C): Docker marks the exec running a moment
    before it records its Pid, and the process must not live on."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        own_cgroup = Path(f"/proc/{process.pid}/cgroup").read_text().splitlines()[0]
        docker = DockerSlowToStartExecs(process, own_cgroup, running_before_pid=True)
        assert exec_module.kill_running_exec(docker, "e" * 64, own_cgroup) == 1
        assert process.wait(timeout=10) == -9
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class DockerWhoseStreamEndsUnderARunningCommand(DockerSlowToStartExecs):
    """Docker's stream ends cleanly (a proxy or dockerd dropped the connection) while the command runs."""

    def start_exec(self, exec_id: str, timeout: float) -> FramedStream:
        return FramedStream([(1, b"partial\n")])

    def inspect_exec(self, exec_id: str) -> dict:
        return {"Running": True, "Pid": self.process.pid, "ContainerID": self.container_id, "ExitCode": None}


def test_a_stream_that_ends_under_a_running_command_kills_it_and_is_unavailable(monkeypatch, probe) -> None:
    monkeypatch.setattr(exec_module, "EXIT_CODE_WAIT_SECONDS", 0.1)
    process, own_cgroup = probe
    with pytest.raises(CRIError) as raised:
        ExecService(DockerWhoseStreamEndsUnderARunningCommand(process, own_cgroup)).exec_sync(
            "c" * 64, ["sleep", "300"], timeout=30)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and "ended while it ran on" in raised.value.message
    assert process.wait(timeout=10) == -9
