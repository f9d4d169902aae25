"""crictl (client-go's SPDY and WebSocket executors and port forwarder) against the streaming server.

An implementation that owes nothing to ours: `crictl exec -i`, `exec -it` in a pseudo-terminal
(client-go sends the terminal's size), `attach` and `port-forward`, each over SPDY and
`--transport websocket`. Skipped where crictl is not installed (CI machines).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from conftest import CRICTL, Shim, needs_crictl, wait_for
from containers_fixtures import Pod, pod  # noqa: F401 (fixture)
from dockershim_py.api import api_pb2 as api
from sandbox_fixtures import free_port

TRANSPORTS = ["spdy", "websocket"]
SIZE = 10 * 1024 * 1024
DOWNLOAD = 8080
UPLOADS = {"spdy": 9011, "websocket": 9012}

pytestmark = needs_crictl


def crictl_command(shim: Shim, *args: str) -> list[str]:
    return [str(CRICTL), "--runtime-endpoint", shim.endpoint, "--image-endpoint", shim.endpoint,
            "--timeout", "30s", *args]


def crictl(shim: Shim, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(crictl_command(shim, *args), input=stdin, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def containers(pod: Pod) -> Iterator[dict[str, str]]:
    uploads = " ".join(str(port) for port in UPLOADS.values())
    made = {
        "shell": pod.run("shell", ["sleep", "3600"]),
        "ticker": pod.run("ticker", ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]),
        "servers": pod.run("servers", ["sh", "-c", (
            f"head -c {SIZE} /dev/urandom > /tmp/blob; sha256sum /tmp/blob | cut -d' ' -f1 > /tmp/blob.sum; "
            f"for port in {uploads}; do (sleep 3600 | nc -l -p $port | sha256sum | cut -d' ' -f1 > /tmp/up.$port) & "
            f"done; while true; do nc -l -p {DOWNLOAD} < /tmp/blob; done")]),
    }
    assert wait_for(lambda: pod.exec(made["servers"], ["cat", "/tmp/blob.sum"]).stdout.strip(), 30)
    yield made
    for container_id in made.values():
        pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_stdin_and_exit_code(shim: Shim, containers: dict[str, str], transport: str) -> None:
    done = crictl(shim, "exec", "--transport", transport, "-i", containers["shell"], "sh", "-c",
                  "cat; echo to-stderr >&2; exit 3", stdin=b"through crictl\n")
    assert done.stdout == b"through crictl\n"
    assert b"to-stderr" in done.stderr
    assert done.returncode != 0 and b"exit code 3" in done.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_tty_size(shim: Shim, containers: dict[str, str], transport: str) -> None:
    """client-go sends the terminal's size; `stty size` inside sees it."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: crictl on the pseudo-terminal
        os.execv(str(CRICTL), crictl_command(shim, "exec", "--transport", transport, "-it", containers["shell"], "sh"))
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 111, 0, 0))
        output = b""

        def read_until(needle: bytes, timeout: float = 20) -> bool:
            nonlocal output
            deadline = time.monotonic() + timeout
            while needle not in output and time.monotonic() < deadline:
                if select.select([terminal], [], [], 0.2)[0]:
                    try:
                        output += os.read(terminal, 4096)
                    except OSError:
                        break
            return needle in output

        assert read_until(b"# "), output  # the shell's prompt: the session is up
        os.write(terminal, b"stty size; exit 4\n")
        assert read_until(b"37 111"), output
        read_until(b"exit code 4")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) != 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(terminal)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attach(shim: Shim, containers: dict[str, str], transport: str) -> None:
    process = subprocess.Popen(crictl_command(shim, "attach", "--transport", transport, containers["ticker"]),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert all(re.fullmatch(rb"tick \d+\n", line) for line in lines), lines
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_port_forward(shim: Shim, pod: Pod, containers: dict[str, str], transport: str) -> None:
    local_download, local_upload = free_port(), free_port()
    process = subprocess.Popen(
        crictl_command(shim, "port-forward", "--transport", transport, pod.id,
                       f"{local_download}:{DOWNLOAD}", f"{local_upload}:{UPLOADS[transport]}"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        for _ in range(2):
            assert b"Forwarding from" in process.stdout.readline()
        with socket.create_connection(("127.0.0.1", local_download), timeout=30) as connection:
            digest, size = hashlib.sha256(), 0
            while size < SIZE and (chunk := connection.recv(1 << 16)):
                digest.update(chunk)
                size += len(chunk)
        assert digest.hexdigest() == pod.exec(containers["servers"], ["cat", "/tmp/blob.sum"]).stdout.decode().strip()
        upload = os.urandom(SIZE)
        with socket.create_connection(("127.0.0.1", local_upload), timeout=30) as connection:
            connection.sendall(upload)
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(1 << 16):
                pass
        path = f"/tmp/up.{UPLOADS[transport]}"
        assert wait_for(lambda: pod.exec(containers["servers"], ["cat", path]).stdout.strip(), 15).decode() == \
            hashlib.sha256(upload).hexdigest()
    finally:
        process.kill()
        process.wait()
