"""Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the kubelet asks about the runtime itself."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from . import __version__
from .api import api_pb2 as api
from .config import Config
from .docker_client import DockerClient
from .errors import CRIError, failed_precondition
from .network import Network

RUNTIME_NAME = "docker"
CRI_VERSION = "0.1.0"
# Readiness is never older than this: cri-dockerd's 60 s cache called a dead daemon ready.
STATUS_CACHE_SECONDS = 1.0
VERSION_CACHE_SECONDS = 10.0


class _Cached:
    """A value recomputed when older than `ttl`; a failure is kept for `failure_ttl`, so that calls
    queued behind one that waited out a hung Docker fail at once instead of each waiting again."""

    def __init__(self, ttl: float, compute: Callable[[], Any], clock: Callable[[], float] = time.monotonic,
                 failure_ttl: float = 0.0) -> None:
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self._compute = compute
        self._clock = clock
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = float("-inf")
        self._failure: tuple[Exception, float] | None = None

    def get(self) -> Any:
        with self._lock:
            if self._clock() - self._at >= self._ttl:
                if self._failure is not None and self._clock() - self._failure[1] < self._failure_ttl:
                    raise self._failure[0]
                try:
                    self._value = self._compute()
                except Exception as exc:
                    self._failure = (exc, self._clock())
                    raise
                self._failure = None
                self._at = self._clock()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._at = float("-inf")


class RuntimeInfo:
    def __init__(self, docker: DockerClient, config: Config, network: Network) -> None:
        self._docker = docker
        self._config = config
        self._network = network
        self._version = _Cached(VERSION_CACHE_SECONDS, docker.version, failure_ttl=STATUS_CACHE_SECONDS)
        self._known_docker_version = ""
        self._ping = _Cached(STATUS_CACHE_SECONDS, self._ping_now)

    def version(self, api_version: str) -> api.VersionResponse:
        """Answered while Docker is down or hung too, with the last version it told (none before
        it first answers): a kubelet starting then would exit on an error here, where Status
        tells it the runtime is not ready and why."""
        try:
            self._known_docker_version = self._version.get().get("Version", "")
        except CRIError as exc:
            if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        return api.VersionResponse(
            version=CRI_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=self._known_docker_version,
            runtime_api_version=api_version,
        )

    def status(self, verbose: bool) -> api.StatusResponse:
        error = self._ping.get()
        docker_ready = error is None
        runtime_condition = api.RuntimeCondition(type="RuntimeReady", status=docker_ready)
        if error is not None:
            runtime_condition.reason = "DockerDaemonNotReady"
            runtime_condition.message = error
            self._version.invalidate()
        network = self._network.status(docker_ready)
        network_condition = api.RuntimeCondition(
            type="NetworkReady", status=network.ready, reason=network.reason, message=network.message
        )
        response = api.StatusResponse(
            status=api.RuntimeStatus(conditions=[runtime_condition, network_condition]),
            features=api.RuntimeFeatures(supplemental_groups_policy=True),
        )
        info: dict[str, Any] | None = None
        if docker_ready:
            try:
                info = self._docker.info()
            except CRIError:
                info = None
        response.runtime_handlers.extend(runtime_handlers(info))
        if verbose:
            response.info.update(self._verbose_info(info))
        return response

    def runtime_config(self) -> api.RuntimeConfigResponse:
        info = self._docker.info()
        driver = cgroup_driver(info.get("CgroupDriver", ""))
        return api.RuntimeConfigResponse(linux=api.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def update_runtime_config(self, runtime_config: api.RuntimeConfig) -> None:
        self._network.update_pod_cidr(runtime_config.network_config.pod_cidr)

    def _ping_now(self) -> str | None:
        try:
            self._docker.ping()
            return None
        except CRIError as exc:
            return exc.message

    def _verbose_info(self, info: dict[str, Any] | None) -> dict[str, str]:
        shim = {"version": __version__, "config": dataclasses.asdict(self._config)}
        result = {"config": json.dumps(shim, sort_keys=True)}
        if info is not None:
            docker = {
                key: info.get(key)
                for key in ("ServerVersion", "CgroupDriver", "CgroupVersion", "Driver", "DockerRootDir",
                            "DefaultRuntime", "SecurityOptions", "KernelVersion", "OperatingSystem")
            }
            docker["Runtimes"] = sorted((info.get("Runtimes") or {}).keys())
            result["docker"] = json.dumps(docker, sort_keys=True)
        return result


def runtime_handlers(info: dict[str, Any] | None) -> list[api.RuntimeHandler]:
    """The default handler (`""`) and every runtime `docker info` lists, as RuntimeClass handlers."""
    names = [""]
    if info is not None:
        names += sorted((info.get("Runtimes") or {}).keys())
    features = api.RuntimeHandlerFeatures(recursive_read_only_mounts=False, user_namespaces=False)
    return [api.RuntimeHandler(name=name, features=features) for name in names]


def cgroup_driver(docker_driver: str) -> api.CgroupDriver:
    if docker_driver == "systemd":
        return api.SYSTEMD
    if docker_driver == "cgroupfs":
        return api.CGROUPFS
    raise failed_precondition(
        f"Docker reports cgroup driver {docker_driver!r}; the kubelet needs systemd or cgroupfs"
    )


