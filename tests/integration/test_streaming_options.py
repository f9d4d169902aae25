"""The streaming server's options on a shim of its own: TLS, the idle and stream-creation timeouts,
and a shutdown that tells open sessions why they end."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import CRICTL, Shim, needs_crictl
from containers_fixtures import Pod
from dockershim_py.api import api_pb2 as api
from dockershim_py.streaming.server import REQUEST_TIMEOUT
from streaming_client import SpdyExec, SpdyForward, SpdySession, WsExec


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("streaming-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_shim(docker_api: docker.APIClient, certificate: tuple[Path, Path]) -> Iterator[Shim]:
    cert, key = certificate
    # Short timeouts, for the tests of them. The test client opens its streams one round trip at a
    # time: 3 s leaves a loaded machine room (with 1 s, test_tls once saw the session closed early).
    shim = Shim(["--streaming-tls-cert", str(cert), "--streaming-tls-key", str(key),
                 "--streaming-connection-idle-timeout", "4s", "--streaming-creation-timeout", "3s"]).start()
    yield shim
    assert shim.stop() == 0, shim.log()[-3000:]
    shim.remove_files()


@pytest.fixture(scope="module")
def container(tls_shim: Shim, docker_api: docker.APIClient) -> Iterator[tuple[Pod, str]]:
    pod = Pod(tls_shim.runtime, docker_api)
    container_id = pod.run("shell", ["sleep", "3600"])
    yield pod, container_id
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)
    pod.close()


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def exec_url(pod: Pod, container_id: str, cmd: list[str], stdin: bool = False) -> str:
    request = api.ExecRequest(container_id=container_id, cmd=cmd, stdin=stdin, stdout=True, stderr=True)
    return pod.runtime.Exec(request, timeout=10).url


def test_tls(container: tuple[Pod, str], client_tls: ssl.SSLContext) -> None:
    pod, container_id = container
    url = exec_url(pod, container_id, ["sh", "-c", "read line; echo tls:$line"], stdin=True)
    assert urllib.parse.urlsplit(url).scheme == "https"
    session = SpdyExec(url, "v4.channel.k8s.io", stdin=True, tls=client_tls)
    session.write(b"spdy\n")
    outcome = session.finish()
    assert outcome.stdout == b"tls:spdy\n", outcome  # once, under the whole suite: b'' (the rest unknown)
    session = WsExec(exec_url(pod, container_id, ["sh", "-c", "read line; echo tls:$line"], stdin=True),
                     "v5.channel.k8s.io", stdin=True, tls=client_tls)
    session.write(b"websocket\n")
    outcome = session.finish()
    assert outcome.stdout == b"tls:websocket\n", outcome
    forward = SpdyForward(pod.runtime.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id), timeout=10).url,
                          tunnel=True, tls=client_tls)
    data, error = forward.connect(9)  # nothing listens: the error arrives over TLS
    assert b"failed to connect to localhost:9" in forward.wait_end(error)
    forward.close()


@needs_crictl
def test_tls_with_crictl(tls_shim: Shim, container: tuple[Pod, str], certificate: tuple[Path, Path]) -> None:
    _, container_id = container
    for transport in ("spdy", "websocket"):
        done = subprocess.run([str(CRICTL), "--runtime-endpoint", tls_shim.endpoint, "exec", "--transport", transport,
                               "--tls-ca", str(certificate[0]), "--tls-cert", str(certificate[0]),  # it wants a
                               "--tls-key", str(certificate[1]), container_id, "echo", "over tls"],  # client pair too
                              capture_output=True, timeout=60)
        assert done.stdout == b"over tls\n", done.stderr


def test_idle_connections_are_closed(container: tuple[Pod, str]) -> None:
    pod, container_id = container
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    session = SpdyExec(exec_url(pod, container_id, ["sleep", "30"]), "v4.channel.k8s.io", stdin=False, tls=context)
    session.session.wait(lambda: session.session.eof, 15)
    assert 3.5 < time.monotonic() - started < 10


def test_streams_must_come_in_time(container: tuple[Pod, str]) -> None:
    pod, container_id = container
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    session = SpdySession(exec_url(pod, container_id, ["true"]), ["v4.channel.k8s.io"], tls=context)
    session.open({"streamtype": "error"})  # stdout and stderr never come
    session.wait(lambda: session.eof, 15)
    assert 2.8 < time.monotonic() - started < 10


def test_shutdown_tells_open_sessions(start_shim, docker_api: docker.APIClient) -> None:
    shim = start_shim()
    pod = Pod(shim.runtime, docker_api)
    try:
        container_id = pod.run("shell", ["sleep", "3600"])
        session = SpdyExec(exec_url(pod, container_id, ["sleep", "60"]), "v4.channel.k8s.io", stdin=False)
        started = time.monotonic()
        assert shim.process is not None
        shim.process.send_signal(signal.SIGTERM)
        outcome = session.finish(timeout=15)
        assert outcome.status["reason"] == "InternalError"
        assert "shutting down" in outcome.status["message"]
        assert shim.process.wait(30) == 0
        assert time.monotonic() - started < 15
    finally:
        pod.close()  # the shim is gone: Docker removes what is left


def test_a_tls_handshake_trickled_a_byte_at_a_time_is_cut_at_the_request_timeout(
        container: tuple[Pod, str]) -> None:
    """Each read waited its own timeout: a ClientHello sent a byte every second held its
    connection (and a slot) for as long as it went on."""
    pod, container_id = container
    target = urllib.parse.urlsplit(exec_url(pod, container_id, ["true"]))
    hello_maker = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                                                        server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        hello_maker.do_handshake()
    hello = outgoing.read()
    started = time.monotonic()
    with socket.create_connection((target.hostname, target.port)) as trickle:
        with contextlib.suppress(OSError):
            for byte in hello:
                trickle.sendall(bytes([byte]))
                time.sleep(1)
                if time.monotonic() - started > REQUEST_TIMEOUT + 8:
                    break
    assert time.monotonic() - started < REQUEST_TIMEOUT + 5
