"""ExecSync on the real daemon: output apart, exit codes, the 16 MiB cap, and timeouts that kill."""

from __future__ import annotations

import time

import grpc
import pytest

from conftest import Shim, wait_for
from containers_fixtures import Pod, pod, rpc_error  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api
from dockershim_py.api import api_pb2_grpc
from dockershim_py.exec import MAX_REPLY_OUTPUT_BYTES


@pytest.fixture(scope="module")
def sleeper(pod: Pod) -> str:
    return pod.run("sleeper")


def sleeps_left(pod: Pod, container_id: str) -> list[str]:
    listing = pod.sh(container_id, "ps -o pid,args")
    return [line for line in listing.splitlines() if "sleep 6" in line]


def test_stdout_stderr_and_exit_code(pod: Pod, sleeper: str) -> None:
    reply = pod.exec(sleeper, ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"])
    assert (reply.stdout, reply.stderr, reply.exit_code) == (b"out\nmore\n", b"err\n", 3)
    assert pod.exec(sleeper, ["true"]) == api.ExecSyncResponse()


def test_timeout_kills_the_command_and_its_children(pod: Pod, sleeper: str) -> None:
    started = time.monotonic()
    code, message = rpc_error(pod.exec, sleeper, ["sh", "-c", "sleep 61 & sleep 62; echo never"], timeout=1)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in message
    assert time.monotonic() - started < 10
    assert wait_for(lambda: not sleeps_left(pod, sleeper), timeout=5), sleeps_left(pod, sleeper)


def test_the_callers_deadline_kills_too(pod: Pod, sleeper: str) -> None:
    request = api.ExecSyncRequest(container_id=sleeper, cmd=["sh", "-c", "sleep 63"], timeout=0)
    code, _ = rpc_error(pod.runtime.ExecSync, request, timeout=1.5)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: not sleeps_left(pod, sleeper), timeout=5), sleeps_left(pod, sleeper)


def test_output_is_capped_to_fit_one_reply(pod: Pod, sleeper: str, shim: Shim) -> None:
    channel = grpc.insecure_channel(shim.endpoint, options=[("grpc.max_receive_message_length", 64 << 20)])
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    try:
        request = api.ExecSyncRequest(container_id=sleeper, timeout=60,
                                      cmd=["sh", "-c", "head -c 20000000 /dev/zero; head -c 100 /dev/zero >&2"])
        reply = runtime.ExecSync(request, timeout=90)
        assert len(reply.stdout) == MAX_REPLY_OUTPUT_BYTES - 100 and set(reply.stdout) == {0}
        assert len(reply.stderr) == 100 and reply.exit_code == 0
        request.cmd[:] = ["sh", "-c", "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2; exit 4"]
        reply = runtime.ExecSync(request, timeout=90)
        assert len(reply.stdout) == len(reply.stderr) == MAX_REPLY_OUTPUT_BYTES // 2
        assert reply.exit_code == 4  # the command ran to its end: the rest was read and dropped
        assert len(reply.SerializeToString()) <= 16 << 20  # what the kubelet can receive
    finally:
        channel.close()


def test_refusals(pod: Pod) -> None:
    stopped = pod.run("stopped", ["true"])
    pod.exited(stopped)
    code, message = rpc_error(pod.exec, stopped, ["true"])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not running" in message
    assert rpc_error(pod.exec, stopped, [])[0] == grpc.StatusCode.INVALID_ARGUMENT
    pod.remove(stopped)
    code, message = rpc_error(pod.exec, pod.id, ["true"])  # the pause container is no CRI container
    assert code == grpc.StatusCode.NOT_FOUND and "pod sandbox" in message
    assert rpc_error(pod.exec, "f" * 64, ["true"])[0] == grpc.StatusCode.NOT_FOUND


def test_an_exec_ended_by_its_containers_exit_returns_in_a_pod_sharing_its_pid_namespace(
        shim: Shim, docker_api) -> None:
    """Docker keeps such an exec's stream open after it ends: the shim asks the exec, not only the stream."""
    shared = api.NamespaceOption(pid=api.POD)
    pod = Pod(shim.runtime, docker_api, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=shared)))
    try:
        container_id = pod.run("short", ["sleep", "2"], linux=api.LinuxContainerConfig(
            security_context=api.LinuxContainerSecurityContext(namespace_options=shared)))
        started = time.monotonic()
        code, message = rpc_error(pod.exec, container_id, ["sleep", "30"], timeout=25)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "stopped while" in message, message
        assert time.monotonic() - started < 15
    finally:
        pod.close()


def test_a_cancelled_exec_is_killed_and_frees_its_worker(pod: Pod, sleeper: str) -> None:
    request = api.ExecSyncRequest(container_id=sleeper, cmd=["sh", "-c", "sleep 64"], timeout=0)
    call = pod.runtime.ExecSync.future(request)
    assert wait_for(lambda: any("sleep 64" in line for line in pod.sh(sleeper, "ps -o args").splitlines()),
                    timeout=10)
    call.cancel()
    assert wait_for(lambda: not any("sleep 64" in line for line in pod.sh(sleeper, "ps -o args").splitlines()),
                    timeout=10)


def test_an_argument_holding_a_nul_byte_is_refused(pod: Pod, sleeper: str) -> None:
    """execve cuts an argument at its NUL: ExecSync ran `echo a` for `echo a\\0b` and answered OK."""
    for call, request in (
            (pod.runtime.ExecSync, api.ExecSyncRequest(container_id=sleeper, cmd=["echo", "a\0b"], timeout=5)),
            (pod.runtime.Exec, api.ExecRequest(container_id=sleeper, cmd=["echo", "a\0b"], stdout=True)),
            (pod.runtime.CreateContainer, api.CreateContainerRequest(
                pod_sandbox_id=pod.id, sandbox_config=pod.config, config=pod.container_config("nul", ["echo", "a\0b"])))):
        code, message = rpc_error(call, request, timeout=10)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in message, message


def test_a_command_not_in_the_image_says_so(pod: Pod, sleeper: str) -> None:
    """A misspelt exec probe or `crictl exec -s`: Docker writes why to stdout, and crictl showed an
    exit code of 126 and nothing else."""
    reply = pod.exec(sleeper, ["dspy-no-such-command", "x"])
    assert reply.exit_code in (126, 127)
    assert b"dspy-no-such-command" in reply.stderr and not reply.stdout, reply  # crictl shows stderr
