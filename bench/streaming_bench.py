"""Streaming throughput of dockershim-py, beside the same bytes moved without it, in one run.

exec stdout   `head -c SIZE /dev/zero` in a container, read to the end:
                shim, SPDY v4        the suite's Python client (streaming_client.SpdyExec)
                shim, WebSocket v5   the same over WebSocket (streaming_client.WsExec)
                shim, crictl         client-go's SPDY executor, output to /dev/null (if crictl is installed)
                docker-py direct     exec_create + exec_start(stream=True), no shim
port forward  SIZE bytes served by `nc` in the pod, read to the end:
                shim, SPDY           the suite's client (streaming_client.SpdyForward)
                shim, SPDY tunnel    the same inside WebSocket
                shim, crictl         `crictl port-forward`, read from its local port (if crictl is installed)
                direct TCP           a plain connection to the pod's IP on Docker's bridge, no shim

Each figure is the best of --runs runs, in MB/s (10^6 bytes/s). Bounded: a few transfers of
--size MiB; local only (a unix socket, 127.0.0.1 and the bench pod's bridge address). The bench
makes its own shim, pod and containers, and removes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

from conftest import CRICTL, DOCKER_SOCKET, Shim  # noqa: E402  (the suite's shim launcher, its crictl)
from containers_fixtures import Pod  # noqa: E402
from dockershim_py.api import api_pb2 as api  # noqa: E402
from sandbox_fixtures import free_port  # noqa: E402
from streaming_client import SpdyExec, SpdyForward, WsExec  # noqa: E402

PORT = 8080


def best_rate(runs: int, size: int, transfer: Callable[[], int]) -> float:
    """MB/s of the fastest of `runs` transfers; each must move exactly `size` bytes."""
    best = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        moved = transfer()
        elapsed = time.perf_counter() - started
        if moved != size:
            raise SystemExit(f"a transfer moved {moved} bytes, not {size}")
        best = max(best, size / elapsed / 1e6)
    return best


def read_all(sock: socket.socket) -> int:
    total = 0
    while chunk := sock.recv(1 << 20):
        total += len(chunk)
    return total


class Bench:
    def __init__(self, pod: Pod, docker_api: docker.APIClient, shim: Shim, shell: str, size: int, runs: int) -> None:
        self.pod, self.docker, self.shim, self.shell, self.size, self.runs = pod, docker_api, shim, shell, size, runs
        self.pod_ip = pod.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id),
                                                   timeout=10).status.network.ip

    def exec_url(self) -> str:
        request = api.ExecRequest(container_id=self.shell, cmd=["head", "-c", str(self.size), "/dev/zero"],
                                  stdout=True, stderr=True)
        return self.pod.runtime.Exec(request, timeout=10).url

    # exec -----------------------------------------------------------------------------------

    def exec_spdy(self) -> int:
        return len(SpdyExec(self.exec_url(), "v4.channel.k8s.io", stdin=False).finish(120).stdout)

    def exec_websocket(self) -> int:
        return len(WsExec(self.exec_url(), "v5.channel.k8s.io", stdin=False).finish(120).stdout)

    def exec_crictl(self) -> int:
        done = subprocess.run([str(CRICTL), "--runtime-endpoint", self.shim.endpoint, "exec", self.shell, "sh", "-c",
                               f"head -c {self.size} /dev/zero"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=300, check=True)
        return len(done.stdout)

    def exec_docker(self) -> int:
        exec_id = self.docker.exec_create(self.shell, ["head", "-c", str(self.size), "/dev/zero"])["Id"]
        return sum(len(chunk) for chunk in self.docker.exec_start(exec_id, stream=True))

    # port forward ---------------------------------------------------------------------------

    def forward_url(self) -> str:
        return self.pod.runtime.PortForward(api.PortForwardRequest(pod_sandbox_id=self.pod.id), timeout=10).url

    def forward_spdy(self, tunnel: bool = False) -> int:
        client = SpdyForward(self.forward_url(), tunnel=tunnel)
        data, _ = client.connect(PORT)
        moved = len(client.wait_end(data, 300))
        client.close()
        return moved

    def forward_crictl(self) -> int:
        local = free_port()
        process = subprocess.Popen([str(CRICTL), "--runtime-endpoint", self.shim.endpoint, "port-forward", self.pod.id,
                                    f"{local}:{PORT}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert process.stdout is not None
            process.stdout.readline()  # "Forwarding from ..."
            with socket.create_connection(("127.0.0.1", local), timeout=60) as connection:
                return read_all(connection)
        finally:
            process.kill()
            process.wait()

    def forward_direct(self) -> int:
        with socket.create_connection((self.pod_ip, PORT), timeout=60) as connection:
            return read_all(connection)


def run(size_mib: int, runs: int) -> dict[str, dict[str, float]]:
    size = size_mib * 1024 * 1024
    docker_api = docker.APIClient(base_url=DOCKER_SOCKET, version="auto", timeout=300)
    shim = Shim(["--log-level", "info"]).start()
    pod = None
    try:
        pod = Pod(shim.runtime, docker_api)
        shell = pod.run("shell", ["sleep", "3600"])
        server = pod.run("server", ["sh", "-c", f"head -c {size} /dev/urandom > /tmp/blob.part; "
                                                f"mv /tmp/blob.part /tmp/blob; nc -ll -p {PORT} -e cat /tmp/blob"])
        deadline = time.monotonic() + 60
        while pod.exec(server, ["test", "-e", "/tmp/blob"]).exit_code and time.monotonic() < deadline:
            time.sleep(0.1)
        bench = Bench(pod, docker_api, shim, shell, size, runs)
        has_crictl = CRICTL.exists() and shutil.which(str(CRICTL)) is not None
        results: dict[str, dict[str, float]] = {"exec stdout": {}, "port forward": {}}
        results["exec stdout"]["docker-py direct"] = best_rate(runs, size, bench.exec_docker)
        results["exec stdout"]["shim, SPDY v4 (Python client)"] = best_rate(runs, size, bench.exec_spdy)
        results["exec stdout"]["shim, WebSocket v5 (Python client)"] = best_rate(runs, size, bench.exec_websocket)
        if has_crictl:
            results["exec stdout"]["shim, crictl (client-go)"] = best_rate(runs, size, bench.exec_crictl)
        results["port forward"]["direct TCP to the pod"] = best_rate(runs, size, bench.forward_direct)
        results["port forward"]["shim, SPDY (Python client)"] = best_rate(runs, size, bench.forward_spdy)
        results["port forward"]["shim, SPDY in WebSocket (Python client)"] = best_rate(
            runs, size, lambda: bench.forward_spdy(tunnel=True))
        if has_crictl:
            results["port forward"]["shim, crictl port-forward (client-go)"] = best_rate(
                runs, size, bench.forward_crictl)
        return results
    finally:
        if pod is not None:
            for entry in docker_api.containers(filters={"name": f"_{pod.namespace}_"}):
                docker_api.kill(entry["Id"])
            pod.close()
        if shim.stop() == 0:
            shim.remove_files()
        docker_api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="MiB per transfer (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="transfers per figure, best kept (default %(default)s)")
    parser.add_argument("--json", default="bench-streaming.json", help="where the JSON goes")
    args = parser.parse_args()
    if not 1 <= args.size <= 1024 or not 1 <= args.runs <= 10:
        parser.error("--size must be 1..1024 MiB and --runs 1..10")
    results = run(args.size, args.runs)
    print(f"streaming throughput, {args.size} MiB per transfer, best of {args.runs} (MB/s)")
    for section, figures in results.items():
        print(f"  {section}")
        for name, rate in figures.items():
            print(f"    {name:<44} {rate:8.1f}")
    Path(args.json).write_text(json.dumps({"size_mib": args.size, "runs": args.runs, "mb_per_s": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
