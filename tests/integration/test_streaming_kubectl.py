"""kubectl through a kubelet-like proxy: the path a cluster takes to the streaming URLs.

A small stand-in for the API server and the kubelet answers kubectl's discovery and pod reads,
and for exec and port-forward does what the kubelet does with a CRI URL: it calls the RPC and
forwards the upgrade request, headers and all, to the URL, then splices the two connections
(the kubelet's UpgradeAwareHandler). With WebSockets extended to the kubelet (Kubernetes 1.36),
kubectl's WebSocket v5 and its SPDY tunnel reach the streaming server unchanged; with them off,
SPDY does. Skipped where kubectl is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from containers_fixtures import Pod, pod  # noqa: F401 (fixture)
from dockershim_py.api import api_pb2 as api
from sandbox_fixtures import free_port

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
PORT = 8080

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"]},
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
         "verbs": ["create"]}]},
    "/version": {"major": "1", "minor": "36", "gitVersion": "v1.36.0"},
}


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _splice(a: socket.socket, b: socket.socket) -> None:
    def copy(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threads = [threading.Thread(target=copy, args=pair, daemon=True) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class KubeletProxy:
    """The API server's pod endpoints and the kubelet's streaming proxy, for one pod named "p"."""

    def __init__(self, pod: Pod, container_id: str) -> None:
        self.pod, self.container_id = pod, container_id
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head, rest = _read_head(client)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            parts = urllib.parse.urlsplit(target)
            if parts.path in DISCOVERY or parts.path.endswith("/pods/p"):
                document = DISCOVERY.get(parts.path) or {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Running"}}
                body = json.dumps(document).encode()
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            url = urllib.parse.urlsplit(self._cri_url(parts))
            with socket.create_connection((url.hostname, url.port)) as backend:
                # The upgrade request as kubectl sent it, to the URL's path (the kubelet's proxy).
                lines = [f"{method} {url.path} HTTP/1.1", f"Host: {url.netloc}",
                         *(line for line in header_lines if not line.lower().startswith("host:"))]
                backend.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + rest)
                _splice(client, backend)

    def _cri_url(self, parts: urllib.parse.SplitResult) -> str:
        query = urllib.parse.parse_qs(parts.query)
        flag = lambda name: query.get(name, ["false"])[0] in ("true", "1")  # noqa: E731
        if parts.path.endswith("/exec"):
            request = api.ExecRequest(container_id=self.container_id, cmd=query["command"], tty=flag("tty"),
                                      stdin=flag("stdin"), stdout=flag("stdout"), stderr=flag("stderr"))
            return self.pod.runtime.Exec(request, timeout=10).url
        return self.pod.runtime.PortForward(api.PortForwardRequest(pod_sandbox_id=self.pod.id), timeout=10).url

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def proxy(pod: Pod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeletProxy, Path]]:
    container_id = pod.run("c", ["sh", "-c", f"head -c 3000000 /dev/urandom > /tmp/blob; "
                                             f"nc -ll -p {PORT} -e cat /tmp/blob"])
    assert wait_for(lambda: pod.exec(container_id, ["test", "-s", "/tmp/blob"]).exit_code == 0, 15)
    made = KubeletProxy(pod, container_id)
    kubeconfig = tmp_path_factory.mktemp("kubectl") / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{made.port}"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "default"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    yield made, kubeconfig
    made.close()
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=30)


def kubectl_env(kubeconfig: Path, websockets: bool) -> dict[str, str]:
    flag = "true" if websockets else "false"
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": flag,
            "KUBECTL_PORT_FORWARD_WEBSOCKETS": flag, "HOME": str(kubeconfig.parent)}


@pytest.mark.parametrize("websockets", [True, False], ids=["websocket", "spdy"])
def test_kubectl_exec(proxy: tuple[KubeletProxy, Path], websockets: bool) -> None:
    _, kubeconfig = proxy
    done = subprocess.run([KUBECTL, "exec", "-i", "p", "--", "sh", "-c", "cat; echo err >&2; exit 3"],
                          input=b"through the kubelet\n", capture_output=True, timeout=60,
                          env=kubectl_env(kubeconfig, websockets))
    assert done.stdout == b"through the kubelet\n"
    # kubectl's own klog lines are not the container's stderr. Over WebSocket, kubectl 1.32 starts
    # reading before it has made its streams, so the empty "ready" message the kubelet (and the
    # shim) sends first on stdout sometimes finds no stream: it logs "Unknown stream id 1,
    # discarding message" and drops the message, which carries nothing. Newer client-go waits.
    stderr = b"".join(line for line in done.stderr.splitlines(keepends=True) if not re.match(rb"[EWI]\d{4} ", line))
    assert stderr.startswith(b"err\n"), done.stderr
    assert done.returncode == 3  # kubectl's own exit status comes from the Status on the error stream


@pytest.mark.parametrize("websockets", [True, False], ids=["websocket-tunnel", "spdy"])
def test_kubectl_port_forward(proxy: tuple[KubeletProxy, Path], pod: Pod, websockets: bool) -> None:
    kubelet, kubeconfig = proxy
    local = free_port()
    process = subprocess.Popen([KUBECTL, "port-forward", "pod/p", f"{local}:{PORT}"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=kubectl_env(kubeconfig, websockets))
    try:
        assert process.stdout is not None
        assert b"Forwarding from" in process.stdout.readline()
        with socket.create_connection(("127.0.0.1", local), timeout=30) as connection:
            received = bytearray()
            while len(received) < 3000000 and (chunk := connection.recv(65536)):
                received += chunk
        expected = pod.exec(kubelet.container_id, ["sha256sum", "/tmp/blob"]).stdout.split()[0].decode()
        assert hashlib.sha256(received).hexdigest() == expected
    finally:
        process.kill()
        process.wait()
