"""The kubelet's PLEG loop, in a process of its own: relist every second, then ContainerStatus of
each container whose state changed.

The kubelet's PLEG goroutine never waits for its stats loop; a Python thread beside the bench's
stats sweep and churn would wait for their interpreter lock, and the relist latency measured
would be partly the bench's own. So kubelet_bench.py runs this as a child process and asks it
for its figures.

Protocol: started with --endpoint (a CRI runtime) or --direct (docker-py, the same questions put
to Docker); prints "ready" once connected, relists until its stdin closes, then prints one JSON
line: {"relist_seconds": [...], "errors": [...], "calls": N}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dockershim_py.api import api_pb2 as api  # noqa: E402
from dockershim_py.api import api_pb2_grpc  # noqa: E402

FOLLOW_UPS_PER_RELIST = 20  # the PLEG follow-ups for changed pods, bounded


def is_not_found(exc: Exception) -> bool:
    return isinstance(exc, docker.errors.NotFound) or (
        isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.NOT_FOUND)


def describe(exc: Exception) -> str:
    return exc.details() if isinstance(exc, grpc.RpcError) else str(exc)


class Pleg:
    """One relist and its follow-ups, through a CRI runtime or straight to Docker."""

    def __init__(self, endpoint: str | None) -> None:
        self.calls = 0
        self.relist_seconds: list[float] = []
        self.errors: list[str] = []
        self._previous: dict[str, str] = {}
        self.channel = None
        if endpoint is None:
            self.client = docker.APIClient(version="auto", timeout=300)
        else:
            self.channel = grpc.insecure_channel(endpoint.removeprefix("tcp://"))
            grpc.channel_ready_future(self.channel).result(timeout=15)
            self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)

    def _guard(self, what: str, fn: Callable[[], Any], gone_is_fine: bool = False) -> None:
        """`gone_is_fine`: a container removed since the list, as the kubelet takes it."""
        try:
            fn()
        except (grpc.RpcError, docker.errors.APIError) as exc:
            if not (gone_is_fine and is_not_found(exc)):
                self.errors.append(f"{what}: {describe(exc)}")

    def _list(self) -> dict[str, str]:
        if self.channel is None:
            containers = self.client.containers(all=True, filters={"label": "io.kubernetes.docker.type=container"})
            self.client.containers(all=True, filters={"label": "io.kubernetes.docker.type=podsandbox"})
            return {c["Id"]: c["State"] for c in containers}
        self.calls += 2
        self.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60)
        # The kubelet's getKubeletContainers sends an empty filter, not none.
        listed = self.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter()),
                                             timeout=60).containers
        return {c.id: str(c.state) for c in listed}

    def _follow_up(self, container_id: str) -> None:
        if self.channel is None:
            self.client.inspect_container(container_id)
            return
        self.calls += 1
        self.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id), timeout=60)

    def relist(self) -> None:
        started = time.perf_counter()
        try:
            current = self._list()
        except (grpc.RpcError, docker.errors.APIError) as exc:
            self.errors.append(f"relist: {describe(exc)}")
            return
        self.relist_seconds.append(time.perf_counter() - started)
        changed = [cid for cid, state in current.items() if self._previous.get(cid) != state]
        self._previous = current
        follow_up = "inspect" if self.channel is None else "ContainerStatus"
        for container_id in changed[:FOLLOW_UPS_PER_RELIST]:
            self._guard(follow_up, lambda cid=container_id: self._follow_up(cid), gone_is_fine=True)

    def run(self, stop: threading.Event, period: float) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            self.relist()
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="the CRI runtime's endpoint, unix:///path")
    target.add_argument("--direct", action="store_true", help="ask Docker with docker-py instead")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between relists (default 1)")
    args = parser.parse_args()

    pleg = Pleg(None if args.direct else args.endpoint)
    stop = threading.Event()
    print("ready", flush=True)
    loop = threading.Thread(target=pleg.run, args=(stop, args.period), daemon=True)
    loop.start()
    sys.stdin.read()  # until the bench closes our stdin
    stop.set()
    loop.join(timeout=120)
    print(json.dumps({"relist_seconds": pleg.relist_seconds, "errors": pleg.errors, "calls": pleg.calls}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
