"""--streaming-tls-client-ca: the streaming server serves only clients whose certificate the CA
signed; a refused client does not spend the single-use URL it tried."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import CRICTL, Shim, needs_crictl
from containers_fixtures import Pod
from dockershim_py.api import api_pb2 as api
from streaming_client import SpdyExec, WsExec


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def self_signed(directory: Path, name: str, *extensions: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    extension_args = [arg for extension in extensions for arg in ("-addext", extension)]
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
            *extension_args, "-keyout", str(key), "-out", str(cert))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """The server's pair, a client CA, a client it signed, and a stranger it did not."""
    directory = tmp_path_factory.mktemp("streaming-mtls")
    server = self_signed(directory, "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    ca = self_signed(directory, "client-ca", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign")
    client_cert, client_key = directory / "client.pem", directory / "client-key.pem"
    request, extensions = directory / "client.csr", directory / "client.ext"
    extensions.write_text("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver-kubelet-client",
            "-keyout", str(client_key), "-out", str(request))
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-days", "1", "-extfile", str(extensions), "-out", str(client_cert))
    stranger = self_signed(directory, "stranger")
    return {"server": server, "ca": ca, "client": (client_cert, client_key), "stranger": stranger}


@pytest.fixture(scope="module")
def mtls_shim(docker_api: docker.APIClient, pki: dict[str, tuple[Path, Path]]) -> Iterator[Shim]:
    cert, key = pki["server"]
    shim = Shim(["--streaming-tls-cert", str(cert), "--streaming-tls-key", str(key),
                 "--streaming-tls-client-ca", str(pki["ca"][0])]).start()
    yield shim
    assert shim.stop() == 0, shim.log()[-3000:]
    shim.remove_files()


@pytest.fixture(scope="module")
def container(mtls_shim: Shim, docker_api: docker.APIClient) -> Iterator[tuple[Pod, str]]:
    pod = Pod(mtls_shim.runtime, docker_api)
    container_id = pod.run("shell", ["sleep", "3600"])
    yield pod, container_id
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)
    pod.close()


def client_context(pki: dict[str, tuple[Path, Path]], identity: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["server"][0]))
    if identity is not None:
        context.load_cert_chain(*map(str, pki[identity]))
    return context


def exec_url(pod: Pod, container_id: str, text: str) -> str:
    request = api.ExecRequest(container_id=container_id, cmd=["echo", text], stdout=True, stderr=True)
    return pod.runtime.Exec(request, timeout=10).url


def test_a_client_the_ca_signed_is_served(container: tuple[Pod, str], pki: dict[str, tuple[Path, Path]]) -> None:
    pod, container_id = container
    tls = client_context(pki, "client")
    spdy = SpdyExec(exec_url(pod, container_id, "spdy"), "v4.channel.k8s.io", stdin=False, tls=tls)
    assert spdy.finish().stdout == b"spdy\n"
    websocket = WsExec(exec_url(pod, container_id, "ws"), "v5.channel.k8s.io", stdin=False, tls=tls)
    assert websocket.finish().stdout == b"ws\n"


@pytest.mark.parametrize("identity", [None, "stranger", "server"])
def test_other_clients_are_refused_and_the_url_survives(
        mtls_shim: Shim, container: tuple[Pod, str], pki: dict[str, tuple[Path, Path]], identity: str | None) -> None:
    """No certificate, a self-signed one, and the server's own (signed by no client CA) alike."""
    pod, container_id = container
    refusals = mtls_shim.log().count("streaming: TLS with 127.0.0.1:")
    url = exec_url(pod, container_id, "after a refusal")
    with pytest.raises(OSError):  # a TLS alert or a closed connection, whichever the client meets first
        SpdyExec(url, "v4.channel.k8s.io", stdin=False, tls=client_context(pki, identity)).finish()
    session = SpdyExec(url, "v4.channel.k8s.io", stdin=False, tls=client_context(pki, "client"))
    assert session.finish().stdout == b"after a refusal\n"
    assert mtls_shim.log().count("streaming: TLS with 127.0.0.1:") == refusals + 1


@needs_crictl
def test_crictl_with_a_client_certificate(mtls_shim: Shim, container: tuple[Pod, str],
                                          pki: dict[str, tuple[Path, Path]]) -> None:
    _, container_id = container
    cert, key = pki["client"]
    done = subprocess.run([str(CRICTL), "--runtime-endpoint", mtls_shim.endpoint, "exec", "--tls-ca",
                           str(pki["server"][0]), "--tls-cert", str(cert), "--tls-key", str(key), container_id,
                           "echo", "mutual"], capture_output=True, timeout=60, check=False)
    assert done.stdout == b"mutual\n", done.stderr


def test_a_missing_client_ca_file_stops_the_start(pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    cert, key = pki["server"]
    shim = Shim(["--streaming-tls-cert", str(cert), "--streaming-tls-key", str(key),
                 "--streaming-tls-client-ca", str(tmp_path / "absent.pem")])
    with pytest.raises(RuntimeError, match="exited"):
        shim.start(wait=10)
    assert shim.stop() != 0
    assert "absent.pem" in shim.log()
    shim.remove_files()
