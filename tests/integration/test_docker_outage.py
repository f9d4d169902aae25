"""A Docker daemon that stops and comes back: UNAVAILABLE meanwhile, recovery without a shim restart.

Runs against a throwaway second dockerd (private_dockerd.py), never the suite's own.
"""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from dockershim_py.api import api_pb2 as api
from private_dockerd import private_dockerd  # noqa: F401  (fixture)


def _runtime_ready(runtime) -> bool:
    conditions = runtime.Status(api.StatusRequest(), timeout=10).status.conditions
    return next(c for c in conditions if c.type == "RuntimeReady").status


def test_stopped_daemon_is_unavailable_and_the_shim_recovers(start_shim, private_dockerd) -> None:
    shim = start_shim(docker_endpoint=private_dockerd.endpoint)
    assert _runtime_ready(shim.runtime)
    shim.images.ListImages(api.ListImagesRequest(), timeout=10)
    docker_version = shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_version
    assert docker_version

    private_dockerd.stop()
    time.sleep(1.1)  # readiness may be cached for at most a second
    started = time.monotonic()
    reply = shim.runtime.Status(api.StatusRequest(), timeout=10)
    runtime_ready = next(c for c in reply.status.conditions if c.type == "RuntimeReady")
    assert runtime_ready.status is False
    assert runtime_ready.reason == "DockerDaemonNotReady"
    assert "cannot reach the Docker daemon" in runtime_ready.message
    for call in (
        lambda: shim.images.ListImages(api.ListImagesRequest(), timeout=10),
        lambda: list(shim.images.StreamImages(api.StreamImagesRequest(), timeout=10)),
        lambda: shim.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image="busybox")), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE,), caught.value.details()
        assert "cannot reach the Docker daemon" in caught.value.details()
    # Version still answers, with the last Docker version told: a kubelet starting now would exit
    # on an error there, where Status tells it why the runtime is not ready.
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_version == docker_version
    assert time.monotonic() - started < 8, "an absent daemon must be reported quickly"

    private_dockerd.start()
    deadline = time.monotonic() + 10
    while not _runtime_ready(shim.runtime):
        assert time.monotonic() < deadline, "the shim did not see the daemon come back"
        time.sleep(0.2)
    shim.images.ListImages(api.ListImagesRequest(), timeout=10)
    list(shim.images.StreamImages(api.StreamImagesRequest(), timeout=10))
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"
    assert shim.process.poll() is None


def test_a_shim_started_before_docker_answers_version_and_says_the_runtime_is_not_ready(start_shim, tmp_path) -> None:
    """A node's kubelet and dockerd start together; the kubelet's first call is Version."""
    shim = start_shim(docker_endpoint=f"unix://{tmp_path}/no-docker.sock")
    version = shim.runtime.Version(api.VersionRequest(), timeout=10)
    assert (version.runtime_name, version.runtime_version, version.runtime_api_version) == ("docker", "", "v1")
    assert not _runtime_ready(shim.runtime)


def test_a_hung_daemon_still_gets_version_answered_and_is_reported_not_ready(start_shim, private_dockerd) -> None:
    """A dockerd that accepts and never answers (stopped, or stuck on a lock) is not a refused
    connection: Version used to fail with DEADLINE_EXCEEDED there, and a kubelet starting then exits."""
    shim = start_shim(docker_endpoint=private_dockerd.endpoint)
    docker_version = shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_version
    assert docker_version
    daemon_pid = int((private_dockerd.dir / "dockerd.pid").read_text())
    os.kill(daemon_pid, signal.SIGSTOP)
    try:
        time.sleep(1.1)  # past the cached readiness
        assert not _runtime_ready(shim.runtime)  # which forgets the version told
        started = time.monotonic()
        assert shim.runtime.Version(api.VersionRequest(), timeout=30).runtime_version == docker_version
        assert time.monotonic() - started < 8
    finally:
        os.kill(daemon_pid, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while not _runtime_ready(shim.runtime):
        assert time.monotonic() < deadline, "the shim did not see the daemon answer again"
        time.sleep(0.2)
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_version == docker_version
