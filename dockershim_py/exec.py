"""ExecSync: run a command in a running container and return its output and exit code.

Two promises cri-dockerd does not keep. Each stream is capped at 16 MiB and the rest is read
and dropped, so a chatty probe cannot grow the shim without bound (the CVE-2022-31030 class).
And on timeout the command's processes are killed before DEADLINE_EXCEEDED is returned, so
timed-out probes do not pile up in the container (critest "execSync with timeout").
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from . import labels
from .container_convert import command_line
from .docker_client import DockerClient, RawStream
from .errors import CRIError, deadline_exceeded, failed_precondition, invalid_argument, not_found, unavailable
from .server import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 16 * 1024 * 1024
# Both streams together must fit one gRPC reply (the kubelet receives at most 16 MiB too).
MAX_REPLY_OUTPUT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
READ_BYTES = 64 * 1024
STDERR = 2
SYSTEM_ERROR = 3  # Docker's own words about a failure after the stream began, not the process's output
# Docker records the exit code a moment after the output stream ends.
EXIT_CODE_WAIT_SECONDS = 5.0
# Connecting to dockerd and starting the exec must not take the whole timeout of a probe.
START_TIMEOUT_SECONDS = 30.0
# After a start that timed out: how long the exec is watched for a late start, and how often.
LATE_START_WATCH_SECONDS = 60.0
LATE_START_POLL_SECONDS = 0.2
# How long an exec being started is waited for its Pid before it can be killed, and how often asked.
PID_WAIT_SECONDS = 5.0
PID_POLL_SECONDS = 0.02
# Longest single wait for output, after which the exec is asked whether it still runs: Docker
# keeps the stream of an ended exec open in a pod that shares its PID namespace.
WAIT_SLICE_SECONDS = 2.0


# --- the stream format (pure) ---------------------------------------------------------------------


class Demultiplexer:
    """Docker's attach framing, sans I/O: 8-byte headers (stream, 0, 0, 0, big-endian size), then payload.

    Payloads are handed out as they arrive, never gathered whole, so a huge frame costs nothing.
    """

    def __init__(self) -> None:
        self._header = b""
        self._stream = 0
        self._remaining = 0

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        view = memoryview(data)
        while view:
            if self._remaining:
                piece = view[:self._remaining]
                self._remaining -= len(piece)
                view = view[len(piece):]
                yield self._stream, bytes(piece)
                continue
            take = 8 - len(self._header)
            self._header += bytes(view[:take])
            view = view[take:]
            if len(self._header) == 8:
                self._stream = self._header[0]
                self._remaining = int.from_bytes(self._header[4:8], "big")
                self._header = b""


class CappedOutput:
    """Keeps the first `limit` bytes of a stream and counts the rest."""

    def __init__(self, limit: int = MAX_OUTPUT_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self._limit - len(self._data)
        self._data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)

    def value(self) -> bytes:
        return bytes(self._data)


def fit_reply(stdout: bytes, stderr: bytes, budget: int = MAX_REPLY_OUTPUT_BYTES) -> tuple[bytes, bytes]:
    """Both streams cut so that together they fit `budget`: each keeps at least half, a short one all."""
    if len(stdout) + len(stderr) <= budget:
        return stdout, stderr
    half = budget // 2
    if len(stderr) <= half:
        return stdout[:budget - len(stderr)], stderr
    if len(stdout) <= half:
        return stdout, stderr[:budget - len(stdout)]
    return stdout[:half], stderr[:budget - half]


# --- killing what a timed-out exec left (host /proc) ----------------------------------------------


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return children


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, parents first."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        if current not in tree:
            tree.append(current)
            queue += _children(current)
    return tree


def in_container(pid: int, container_id: str) -> bool:
    """Whether process `pid` is in the container's cgroup (so a reused PID is never killed)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            return container_id in handle.read()
    except OSError:
        return False


def kill_process_tree(pid: int, container_id: str) -> int:
    """Stop `pid` and every descendant (so none escapes by forking while the tree is walked), then kill them all.

    A process that had left the tree already (a daemon, re-parented to the container's init) is
    not found: containerd and cri-dockerd leave it too.
    """
    if not in_container(pid, container_id):
        return 0
    stopped: list[int] = []
    for _ in range(10):
        new = [process for process in process_tree(pid) if process not in stopped]
        if not new:
            break
        for process in new:
            try:
                os.kill(process, signal.SIGSTOP)
                stopped.append(process)
            except ProcessLookupError:
                continue
    for process in stopped:
        try:
            os.kill(process, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(stopped)


def kill_running_exec(docker: DockerClient, exec_id: str, container_id: str,
                      wait_seconds: float = PID_WAIT_SECONDS, poll_seconds: float = PID_POLL_SECONDS) -> int:
    """Kill an exec's process and its descendants once Docker gives its Pid; how many were killed.

    An exec being started is waited for up to `wait_seconds`: Docker marks it running a moment
    before it records its Pid (and a busy dockerd may start one late). Only the exec's own tree is
    walked, so the container's main process is never among them. Raises CRIError when Docker
    could not be asked until the end of the wait.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            details = docker.inspect_exec(exec_id)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return 0  # its container is gone, and the exec with it
            if time.monotonic() > deadline:
                raise
            details = {}
        if details.get("ExitCode") is not None and not details.get("Running"):
            return 0  # ended
        if details.get("Running") and details.get("Pid"):
            return kill_process_tree(int(details["Pid"]), details.get("ContainerID") or container_id)
        if time.monotonic() > deadline:
            log.warning("exec %s in %s: Docker gave no process ID in %gs; it is not killed",
                        exec_id[:12], container_id[:12], wait_seconds)
            return 0
        time.sleep(poll_seconds)


# --- ExecSync -------------------------------------------------------------------------------------


# How Docker begins the message it writes to an exec's stdout when the runtime cannot start the
# command (not in the image, not executable).
_RUNTIME_EXEC_FAILED = b"OCI runtime exec failed"


class ExecService:
    def __init__(self, docker: DockerClient) -> None:
        self._docker = docker

    def exec_sync(self, container_id: str, cmd: list[str], timeout: float,
                  register_cancel: Callable[[Callable[[], None]], bool] = lambda cancel: True,
                  ) -> tuple[bytes, bytes, int]:
        """(stdout, stderr, exit code) of `cmd`; `timeout` 0 means none. A non-zero exit is not an error.

        `register_cancel` gets a function that ends the wait when the caller goes away: its command
        is killed then, as at a timeout, instead of running on and holding a worker.
        """
        if not container_id:
            raise invalid_argument("container_id is empty")
        if not cmd:
            raise invalid_argument("cmd is empty")
        command_line(cmd, "cmd")
        if timeout < 0:
            raise invalid_argument(f"timeout {timeout} is negative")
        deadline = time.monotonic() + timeout if timeout else None
        container_id = self._docker.full_id(container_id, labels.CONTAINERS_FILTER, "container")  # crictl's prefix
        inspect = self._docker.inspect_container(container_id)  # the index's answer, when it is fresh
        if not labels.is_container((inspect.get("Config") or {}).get("Labels")):
            raise not_found(f"container {container_id!r} not found (a pod sandbox's ID is not a container's)")
        exec_id = self._docker.create_exec(container_id, cmd)
        start_timeout = min(START_TIMEOUT_SECONDS, timeout) if timeout else START_TIMEOUT_SECONDS
        try:
            stream = self._docker.start_exec(exec_id, start_timeout)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:  # a busy dockerd may still start it
                self._kill_when_started(exec_id, container_id)
            raise
        stdout, stderr = CappedOutput(), CappedOutput()
        cancelled = threading.Event()

        def cancel() -> None:
            cancelled.set()
            stream.interrupt()

        try:
            if not register_cancel(cancel):  # the caller left while the exec started
                cancel()
            finished = self._copy(stream, stdout, stderr, deadline, lambda: self._ended(exec_id))
        except OSError as exc:
            if not cancelled.is_set():
                killed = self._kill(exec_id, container_id)
                raise unavailable(f"command {cmd!r} in container {container_id}: connection to Docker lost "
                                  f"({exc}); {killed} process(es) killed") from exc
            finished = False
        finally:
            stream.close()
        if cancelled.is_set():
            killed = self._kill(exec_id, container_id)
            raise CRIError(grpc.StatusCode.CANCELLED, f"command {cmd!r} in container {container_id}: the caller "
                                                      f"went away; {killed} process(es) killed")
        if not finished:
            killed = self._kill(exec_id, container_id)
            raise deadline_exceeded(
                f"command {cmd!r} in container {container_id} timed out after {timeout:g}s; "
                f"{killed} process(es) killed"
            )
        out, err = fit_reply(stdout.value(), stderr.value())
        dropped = stdout.dropped + stderr.dropped + len(stdout.value()) + len(stderr.value()) - len(out) - len(err)
        if dropped:
            log.warning("ExecSync in %s: output beyond %d bytes per stream (%d in all) dropped: %d bytes",
                        container_id[:12], MAX_OUTPUT_BYTES, MAX_REPLY_OUTPUT_BYTES, dropped)
        try:
            exit_code = self._exit_code(exec_id)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:  # Docker drops a stopped container's execs
                raise self._gone_with_its_container(container_id, cmd) from exc
            raise
        if exit_code in (126, 127) and not err and out.startswith(_RUNTIME_EXEC_FAILED):
            out, err = b"", out  # Docker writes why the command could not start to stdout; crictl shows stderr
        if exit_code is None:  # the stream ended under a running command: a lost connection, mostly
            killed = self._kill(exec_id, container_id)
            raise unavailable(f"command {cmd!r} in container {container_id}: Docker's stream of its output ended "
                              f"while it ran on (a lost connection, or it closed its output); {killed} process(es) "
                              f"killed")
        return out, err, exit_code

    def _gone_with_its_container(self, container_id: str, cmd: list[str]) -> CRIError:
        try:
            self._docker.inspect_container(container_id)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return not_found(f"container {container_id} was removed while {cmd!r} ran in it")
            raise
        return failed_precondition(f"container {container_id} stopped while {cmd!r} ran in it; Docker dropped "
                                   f"the exec with it, so its exit code is not known")

    @staticmethod
    def _copy(stream: RawStream, stdout: CappedOutput, stderr: CappedOutput, deadline: float | None,
              ended: Callable[[], bool]) -> bool:
        """Read until the command's output ends or the exec has ended (True), or the deadline passes (False)."""
        frames = Demultiplexer()
        while True:
            remaining = WAIT_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                data = stream.recv(READ_BYTES, min(remaining, WAIT_SLICE_SECONDS))
            except (socket.timeout, TimeoutError):
                if ended():
                    return True
                continue
            if not data:
                return True
            for kind, payload in frames.feed(data):
                (stderr if kind in (STDERR, SYSTEM_ERROR) else stdout).add(payload)

    def _ended(self, exec_id: str) -> bool:
        """The exec has an exit code, or its container is gone."""
        try:
            details = self._docker.inspect_exec(exec_id)
        except CRIError as exc:
            return exc.code == grpc.StatusCode.NOT_FOUND
        return not details.get("Running") and details.get("ExitCode") is not None

    def _kill_when_started(self, exec_id: str, container_id: str) -> None:
        """Docker starts an exec whose caller gave up waiting for it: kill it then, or a probe that
        timed out on a busy node leaves one more process running each time."""

        def watch() -> None:
            try:
                killed = kill_running_exec(self._docker, exec_id, container_id,
                                           LATE_START_WATCH_SECONDS, LATE_START_POLL_SECONDS)
            except CRIError as exc:
                log.error("exec %s in %s may have started after ExecSync gave up; Docker could not be asked: %s",
                          exec_id[:12], container_id[:12], exc.message)
                return
            if killed:
                log.info("exec %s in %s started after ExecSync gave up: killed %d process(es)",
                         exec_id[:12], container_id[:12], killed)

        threading.Thread(target=watch, name=f"exec-late-{exec_id[:12]}", daemon=True).start()

    def _kill(self, exec_id: str, container_id: str) -> int:
        try:
            killed = kill_running_exec(self._docker, exec_id, container_id)
        except CRIError as exc:
            log.error("ExecSync ended early (a timeout, a cancel) but its process could not be found: %s", exc.message)
            return 0
        if killed:
            log.info("ExecSync %s in %s ended early (a timeout, a cancel): killed %d process(es)",
                     exec_id[:12], container_id[:12], killed)
        return killed

    def _exit_code(self, exec_id: str) -> int | None:
        """The exit code once Docker has one; None when the command still runs EXIT_CODE_WAIT_SECONDS
        after its output ended."""
        deadline = time.monotonic() + EXIT_CODE_WAIT_SECONDS
        while True:
            details = self._docker.inspect_exec(exec_id)
            if not details.get("Running") and details.get("ExitCode") is not None:
                return int(details["ExitCode"])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
