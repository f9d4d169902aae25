"""What the streaming sessions need from Docker: checks, exec and attach connections, resizes, exit codes.

The RPCs check a container or sandbox before handing out a URL; the sessions then start the
process (`exec`) or join it (`attach`) on a hijacked Docker connection and ask for its outcome
once its output has ended. Kept apart from the protocol code so that sessions can be tested
with a fake, and so that every Docker request of a stream goes through `DockerClient`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

import grpc

from .. import labels
from ..docker_client import DockerClient, RawStream
from ..errors import CRIError, failed_precondition, invalid_argument, not_found
from ..exec import kill_running_exec
from .channels import Status, TerminalSize

log = logging.getLogger(__name__)

# Connecting to dockerd and starting the exec or attach.
START_TIMEOUT_SECONDS = 30.0
# Docker records an exec's exit code a moment after its output ends.
EXIT_CODE_WAIT_SECONDS = 2.0


class Process(Protocol):
    """A process's stdio on a hijacked Docker connection."""

    stream: RawStream
    multiplexed: bool  # False with a TTY: the output is raw, not framed by stream

    def resize(self, size: TerminalSize) -> None: ...

    def outcome(self) -> Status: ...

    def ended(self) -> bool:
        """Whether Docker says the process is over, whatever its stream does."""
        ...

    def terminate(self) -> int:
        """End the process if it still runs, now that nobody reads it; how many processes were killed."""
        ...


class ExecProcess:
    def __init__(self, docker: DockerClient, container_id: str, exec_id: str, stream: RawStream,
                 tty: bool) -> None:
        self._docker = docker
        self.container_id = container_id
        self.exec_id = exec_id
        self.stream = stream
        self.multiplexed = not tty

    def resize(self, size: TerminalSize) -> None:
        self._docker.resize_exec(self.exec_id, size.height, size.width)

    def outcome(self) -> Status:
        """Success, the non-zero exit code (1-255), or an internal error when Docker has none."""
        deadline = time.monotonic() + EXIT_CODE_WAIT_SECONDS
        while True:
            try:
                details = self._docker.inspect_exec(self.exec_id)
            except CRIError as exc:
                return Status.internal_error(f"error executing command in container: {exc.message}")
            code = details.get("ExitCode")
            if not details.get("Running") and code is not None:
                break
            if time.monotonic() > deadline:
                return Status.internal_error(
                    f"error executing command in container: exec {self.exec_id} ended its output but Docker "
                    f"reports no exit code after {EXIT_CODE_WAIT_SECONDS:g}s")
            time.sleep(0.02)
        if code == 0:
            return Status.ok()
        if isinstance(code, int) and 1 <= code <= 255:
            return Status.exit_code(code)
        return Status.internal_error(f"error executing command in container: exit code {code!r} out of range")

    def ended(self) -> bool:
        try:
            return not self._docker.inspect_exec(self.exec_id).get("Running")
        except CRIError as exc:
            return exc.code == grpc.StatusCode.NOT_FOUND  # its container is gone

    def terminate(self) -> int:
        """Kill the exec's process tree: Docker leaves an exec running when its client goes away."""
        return kill_running_exec(self._docker, self.exec_id, self.container_id)


class AttachProcess:
    def __init__(self, docker: DockerClient, container_id: str, stream: RawStream, tty: bool) -> None:
        self._docker = docker
        self.container_id = container_id
        self.stream = stream
        self.multiplexed = not tty

    def resize(self, size: TerminalSize) -> None:
        self._docker.resize_container(self.container_id, size.height, size.width)

    def outcome(self) -> Status:
        """An attach ends when the container's output does; that is a success, as for the kubelet."""
        return Status.ok()

    def ended(self) -> bool:
        return False  # an attach's stream ends with the container's output

    def terminate(self) -> int:
        """Nothing: the process attached to is the container's own, which outlives its clients."""
        return 0


class StreamingRuntime:
    def __init__(self, docker: DockerClient, start_timeout: float = START_TIMEOUT_SECONDS) -> None:
        self._docker = docker
        self._start_timeout = start_timeout

    def running_container(self, container_id: str) -> dict[str, Any]:
        """Docker's inspect of a running CRI container: NOT_FOUND or FAILED_PRECONDITION otherwise."""
        if not container_id:
            raise invalid_argument("missing required container_id")
        inspect = self._inspect(container_id, "container")
        docker_labels = (inspect.get("Config") or {}).get("Labels")
        if not labels.is_container(docker_labels):
            raise not_found(f"container {container_id!r} not found")
        if not _running(inspect):
            raise failed_precondition(f"container {container_id} is not running")
        return inspect

    def running_sandbox(self, sandbox_id: str) -> dict[str, Any]:
        """Docker's inspect of a ready pod sandbox: NOT_FOUND or FAILED_PRECONDITION otherwise."""
        if not sandbox_id:
            raise invalid_argument("missing required pod_sandbox_id")
        inspect = self._inspect(sandbox_id, "pod sandbox")
        if not labels.is_sandbox((inspect.get("Config") or {}).get("Labels")):
            raise not_found(f"pod sandbox {sandbox_id!r} not found")
        if not _running(inspect):
            raise failed_precondition(f"pod sandbox {sandbox_id} is not ready")
        return inspect

    def exec(self, container_id: str, cmd: list[str], *, stdin: bool, stdout: bool, stderr: bool,
             tty: bool) -> ExecProcess:
        exec_id = self._docker.create_exec(container_id, cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        stream = self._docker.start_exec(exec_id, self._start_timeout, tty=tty)
        return ExecProcess(self._docker, container_id, exec_id, stream, tty)

    def attach(self, container_id: str, *, stdin: bool, stdout: bool, stderr: bool) -> AttachProcess:
        """Join the container's stdio; the framing follows the container's own TTY setting."""
        inspect = self.running_container(container_id)
        tty = bool((inspect.get("Config") or {}).get("Tty"))
        stream = self._docker.attach_container(container_id, stdin=stdin, stdout=stdout, stderr=stderr,
                                               timeout=self._start_timeout)
        return AttachProcess(self._docker, container_id, stream, tty)

    def sandbox_network_namespace(self, sandbox_id: str) -> int:
        """An open descriptor of the sandbox's network namespace (the caller closes it).

        Opened through the pause process, then checked again, so that a recycled PID cannot hand
        out another process's namespace.
        """
        pid = (self.running_sandbox(sandbox_id).get("State") or {}).get("Pid")
        if not pid:
            raise failed_precondition(f"pod sandbox {sandbox_id} has no process")
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise failed_precondition(f"network namespace of pod sandbox {sandbox_id}: {exc}") from exc
        try:
            if (self.running_sandbox(sandbox_id).get("State") or {}).get("Pid") != pid:
                raise failed_precondition(f"pod sandbox {sandbox_id} restarted")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _inspect(self, object_id: str, kind: str) -> dict[str, Any]:
        """Docker's inspect of a container or pod sandbox; crictl's ID prefix taken among that kind."""
        kind_filter = labels.SANDBOXES_FILTER if kind == "pod sandbox" else labels.CONTAINERS_FILTER
        try:
            return self._docker.inspect_container(self._docker.full_id(object_id, kind_filter, kind))
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"{kind} {object_id!r} not found") from exc
            raise


def _running(inspect: dict[str, Any]) -> bool:
    state = inspect.get("State") or {}
    return bool(state.get("Running")) and not state.get("Paused")
