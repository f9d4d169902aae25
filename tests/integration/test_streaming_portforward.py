"""Port forward through the streaming server: SPDY, SPDY tunnelled in WebSocket, and WebSocket channels.

10 MB each way, checked by SHA-256 against what the pod saw; several connections and ports in
one session; an IPv6-only server; a refused port reported on the error stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import urllib.parse
from collections.abc import Iterator

import docker
import pytest

from conftest import Shim, wait_for
from containers_fixtures import Pod
from dockershim_py.api import api_pb2 as api
from streaming_client import SpdyForward, WsForward

SIZE = 10 * 1024 * 1024
DOWNLOAD, ECHO, IPV6 = 8080, 8082, 8090
UPLOAD_PORTS = {"spdy": 9001, "tunnel": 9002, "v4.channel.k8s.io": 9003, "v4.base64.channel.k8s.io": 9004, "": 9005}
FRAMINGS = list(UPLOAD_PORTS)


@pytest.fixture(scope="module")
def pod(shim: Shim, docker_api: docker.APIClient) -> Iterator[Pod]:
    """A pod with IPv6 on its loopback (Docker turns it off by default)."""
    made = Pod(shim.runtime, docker_api, linux=api.LinuxPodSandboxConfig(sysctls={
        "net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.lo.disable_ipv6": "0"}))
    yield made
    made.close()


@pytest.fixture(scope="module")
def servers(pod: Pod) -> Iterator[str]:
    """One container serving a 10 MB blob, an echo, uploads that are hashed, and HTTP on ::1 only."""
    uploads = " ".join(str(port) for port in UPLOAD_PORTS.values())
    script = (
        f"head -c {SIZE} /dev/urandom > /tmp/blob; sha256sum /tmp/blob | cut -d' ' -f1 > /tmp/blob.sum; "
        "mkdir -p /www; head -c 1000000 /dev/urandom > /www/page; "
        f"httpd -p [::1]:{IPV6} -h /www; "
        f"for port in {uploads}; do (sleep 3600 | nc -l -p $port | sha256sum | cut -d' ' -f1 > /tmp/up.$port) & done; "
        f"nc -ll -p {ECHO} -e cat & "
        f"while true; do nc -l -p {DOWNLOAD} < /tmp/blob; done"
    )
    container_id = pod.run("servers", ["sh", "-c", script])
    assert wait_for(lambda: pod.exec(container_id, ["cat", "/tmp/blob.sum"]).stdout.strip(), 30)
    yield container_id
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)


def forward_url(pod: Pod, ports: list[int] | None = None) -> str:
    return pod.runtime.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id, port=ports or []), timeout=10).url


def file_sum(pod: Pod, container_id: str, path: str) -> str:
    return pod.exec(container_id, ["cat", path]).stdout.decode().strip()


@pytest.mark.parametrize("framing", FRAMINGS, ids=[f or "none" for f in FRAMINGS])
def test_ten_megabytes_each_way(pod: Pod, servers: str, framing: str) -> None:
    blob_sum = file_sum(pod, servers, "/tmp/blob.sum")
    upload = os.urandom(SIZE)
    upload_port = UPLOAD_PORTS[framing]
    if framing in ("spdy", "tunnel"):
        client = SpdyForward(forward_url(pod), tunnel=framing == "tunnel")
        down_data, down_error = client.connect(DOWNLOAD)
        up_data, up_error = client.connect(upload_port)
        client.send(up_data, upload, fin=True)
        downloaded = client.wait_end(down_data)
        assert client.wait_end(down_error) == b""  # the error stream ends without an error
        assert client.wait_end(up_data) == b""
        client.close()
    else:
        client = WsForward(forward_url(pod, [DOWNLOAD, upload_port]), framing)
        assert client.prefixes == {0: DOWNLOAD.to_bytes(2, "little"), 1: DOWNLOAD.to_bytes(2, "little"),
                                   2: upload_port.to_bytes(2, "little"), 3: upload_port.to_bytes(2, "little")}
        client.send(1, upload)
        client.ws.reader.wait(lambda: len(client.channels[0]) >= SIZE)
        downloaded = client.received(0)
        client.close()  # the end of the upload, in a protocol without half-close
    assert hashlib.sha256(downloaded).hexdigest() == blob_sum
    assert wait_for(lambda: file_sum(pod, servers, f"/tmp/up.{upload_port}"), 15) == \
        hashlib.sha256(upload).hexdigest()


def test_many_connections_in_one_session(pod: Pod, servers: str) -> None:
    client = SpdyForward(forward_url(pod))
    payloads = {}
    for _ in range(12):
        data, _error = client.connect(ECHO)
        payloads[data] = os.urandom(100_000)
    for data, payload in payloads.items():
        client.send(data, payload, fin=True)
    for data, payload in payloads.items():
        assert client.wait_end(data) == payload
    # The session carries on: one more connection after the others ended.
    data, _ = client.connect(ECHO)
    client.send(data, b"again", fin=True)
    assert client.wait_end(data) == b"again"
    client.close()


def test_several_ports_over_websocket_channels(pod: Pod, servers: str) -> None:
    client = WsForward(forward_url(pod, [ECHO, ECHO]), "v4.channel.k8s.io")
    client.send(0, b"first")
    client.send(1, b"second")
    client.ws.reader.wait(lambda: client.channels[0] == bytearray(b"first") and client.channels[2] == bytearray(b"second"))
    client.close()


@pytest.mark.parametrize("tunnel", [False, True], ids=["spdy", "tunnel"])
def test_ipv6_only_server(pod: Pod, servers: str, tunnel: bool) -> None:
    page_sum = pod.exec(servers, ["sha256sum", "/www/page"]).stdout.split()[0].decode()
    client = SpdyForward(forward_url(pod), tunnel=tunnel)
    data, error = client.connect(IPV6)
    client.send(data, b"GET /page HTTP/1.0\r\n\r\n")
    response = client.wait_end(data)
    client.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert hashlib.sha256(body).hexdigest() == page_sum


def test_refused_port_is_reported_on_the_error_stream(pod: Pod, servers: str) -> None:
    client = SpdyForward(forward_url(pod))
    data, error = client.connect(9999)
    report = json.loads(client.wait_end(error))
    assert report["closeConnection"] is True
    assert report["message"].startswith(f"error forwarding port 9999 to pod {pod.id}")
    assert "IPv4" in report["message"] and "IPv6" in report["message"]
    assert client.wait_end(data) == b""
    client.close()


def test_websocket_port_from_the_query_when_the_rpc_had_none(pod: Pod, servers: str) -> None:
    client = WsForward(forward_url(pod) + f"?port={ECHO}", "v4.base64.channel.k8s.io")
    client.send(0, b"via query")
    client.ws.reader.wait(lambda: client.channels[0] == bytearray(b"via query"))
    client.close()


def test_a_client_that_floods_pings_and_reads_nothing_is_no_longer_read(pod: Pod, servers: str) -> None:
    """Each PING asks for an echo: unread echoes must not pile up in the shim's memory without end."""
    url = urllib.parse.urlsplit(forward_url(pod))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.hostname, url.port))
    try:
        sock.sendall((f"POST {url.path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                      f"X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        pings = b"".join(struct.pack(">III", 0x80030006, 4, 1 + 2 * n) for n in range(4096))  # 48 KiB
        sock.settimeout(5)
        sent = 0
        with pytest.raises(socket.timeout):
            while sent < 64 << 20:  # far more than the kernel's buffers and the shim's queue limit
                sock.sendall(pings)
                sent += len(pings)
    finally:
        sock.close()
