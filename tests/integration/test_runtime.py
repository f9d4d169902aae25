"""Version, Status, RuntimeConfig and UpdateRuntimeConfig against the real daemon."""

from __future__ import annotations

import json

import grpc
import pytest

from dockershim_py.api import api_pb2 as api


def test_version_reports_the_engine(runtime, docker_api) -> None:
    reply = runtime.Version(api.VersionRequest(version="v1"), timeout=10)
    assert reply.runtime_name == "docker"
    assert reply.runtime_version == docker_api.version()["Version"]
    assert reply.runtime_api_version == "v1"
    assert reply.version == "0.1.0"


def test_status_is_ready_with_docker_runtimes_as_handlers(runtime, docker_api) -> None:
    reply = runtime.Status(api.StatusRequest(), timeout=10)
    conditions = {c.type: c for c in reply.status.conditions}
    assert conditions["RuntimeReady"].status is True
    assert conditions["NetworkReady"].status is True
    handlers = [h.name for h in reply.runtime_handlers]
    assert handlers[0] == ""
    assert sorted(handlers[1:]) == sorted(docker_api.info()["Runtimes"])
    assert all(not h.features.user_namespaces for h in reply.runtime_handlers)
    assert not reply.info, "info is only for verbose requests"


def test_verbose_status_describes_shim_and_docker(runtime, docker_api, shim) -> None:
    reply = runtime.Status(api.StatusRequest(verbose=True), timeout=10)
    config = json.loads(reply.info["config"])
    assert config["config"]["container_runtime_endpoint"] == shim.endpoint
    docker = json.loads(reply.info["docker"])
    info = docker_api.info()
    assert docker["CgroupDriver"] == info["CgroupDriver"]
    assert docker["DockerRootDir"] == info["DockerRootDir"]


def test_runtime_config_reports_dockers_cgroup_driver(runtime, docker_api) -> None:
    reply = runtime.RuntimeConfig(api.RuntimeConfigRequest(), timeout=10)
    expected = {"cgroupfs": api.CGROUPFS, "systemd": api.SYSTEMD}[docker_api.info()["CgroupDriver"]]
    assert reply.linux.cgroup_driver == expected


def test_update_runtime_config_is_accepted_and_logged(start_shim) -> None:
    shim = start_shim()
    request = api.UpdateRuntimeConfigRequest(
        runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="10.88.0.0/16"))
    )
    shim.runtime.UpdateRuntimeConfig(request, timeout=10)
    assert "pod CIDR set to '10.88.0.0/16'" in shim.log()
    # Trimmed, and a range that is not a CIDR is refused rather than handed to every CNI plugin.
    request.runtime_config.network_config.pod_cidr = "10.89.0.0/16, fd00:89::/64"
    shim.runtime.UpdateRuntimeConfig(request, timeout=10)
    assert "pod CIDR set to '10.89.0.0/16,fd00:89::/64'" in shim.log()
    request.runtime_config.network_config.pod_cidr = "not-a-cidr"
    with pytest.raises(grpc.RpcError) as refused:
        shim.runtime.UpdateRuntimeConfig(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'not-a-cidr' is not a CIDR" in refused.value.details()
    assert (shim.root / "pod-cidr").read_text() == "10.89.0.0/16,fd00:89::/64"
    request.runtime_config.network_config.pod_cidr = ""  # not a clearing: the kubelet never sends one
    shim.runtime.UpdateRuntimeConfig(request, timeout=10)
    assert (shim.root / "pod-cidr").read_text() == "10.89.0.0/16,fd00:89::/64"
