import argparse

import pytest

from dockershim_py import config


def test_defaults() -> None:
    settings = config.from_args([])
    assert settings.container_runtime_endpoint == "unix:///var/run/dockershim.sock"
    assert settings.runtime_request_timeout == 120.0
    assert settings.image_pull_progress_deadline == 60.0
    assert settings.pod_infra_container_image == "registry.k8s.io/pause:3.10"
    assert settings.root_directory == "/var/lib/dockershim-py"
    assert settings.metrics_address == ""  # the metrics endpoint is off


def test_metrics_address() -> None:
    assert config.from_args(["--metrics-address", "127.0.0.1:9099"]).metrics_address == "127.0.0.1:9099"
    assert config.from_args(["--metrics-address", "[::1]:0"]).metrics_address == "[::1]:0"
    assert config.from_args(["--metrics-address", ""]).metrics_address == ""
    with pytest.raises(SystemExit):
        config.from_args(["--metrics-address", "localhost:9099"])  # an IP address, as for the streaming server


def test_listen_is_an_alias_and_durations_parse() -> None:
    settings = config.from_args([
        "--listen", "tcp://127.0.0.1:7777",
        "--runtime-request-timeout", "1m30s",
        "--image-pull-progress-deadline", "500ms",
        "--docker-config", "/a.json", "--docker-config", "/b.json",
    ])
    assert settings.container_runtime_endpoint == "tcp://127.0.0.1:7777"
    assert settings.runtime_request_timeout == 90.0
    assert settings.image_pull_progress_deadline == 0.5
    assert settings.docker_config_paths == ("/a.json", "/b.json")


@pytest.mark.parametrize("text, seconds", [("2m", 120.0), ("45", 45.0), ("1h", 3600.0), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert config._duration(text) == seconds


@pytest.mark.parametrize("text", ["2x", "m", "10m5", "", "nan", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        config._duration(text)


def test_docker_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", "/etc/dockercfg")
    assert config.from_args([]).docker_config_paths[0] == "/etc/dockercfg/config.json"


def test_cni_flags() -> None:
    assert (config.from_args([]).network_plugin, config.from_args([]).cni_bin_dirs) == (
        "", ("/opt/cni/bin", "/usr/lib/cni"))
    settings = config.from_args(["--network-plugin", "cni", "--cni-conf-dir", "/etc/x", "--cni-bin-dir", "/a,/b,",
                                 "--cni-cache-dir", "/var/lib/y"])
    assert (settings.network_plugin, settings.cni_conf_dir, settings.cni_bin_dirs, settings.cni_cache_dir) == (
        "cni", "/etc/x", ("/a", "/b"), "/var/lib/y")
    with pytest.raises(SystemExit):
        config.from_args(["--network-plugin", "kubenet"])


@pytest.mark.parametrize("flags", [
    ["--runtime-request-timeout", "-5"], ["--runtime-request-timeout", "0"],
    ["--image-pull-progress-deadline", "-1s"], ["--image-pull-progress-deadline", "0"],
    ["--container-runtime-endpoint", "dockershim.sock"], ["--container-runtime-endpoint", "tcp://127.0.0.1"],
    ["--docker-endpoint", "docker.sock"], ["--docker-endpoint", "unix://var/run/docker.sock"],
    ["--docker-endpoint", "ssh://node"], ["--docker-endpoint", "tcp://127.0.0.1:http"],
    ["--docker-endpoint", "tcp://127.0.0.1:²"], ["--container-runtime-endpoint", "tcp://127.0.0.1:²"],
    ["--metrics-address", "127.0.0.1:²"],
    ["--pod-infra-container-image", "registry.k8s.io/pause:<none>"], ["--pod-infra-container-image", ""],
    ["--pod-infra-container-image", "Pause:3.10"], ["--shutdown-grace-period", "-5"],
])
def test_settings_every_call_would_fail_with_stop_the_shim_at_start(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        config.from_args(flags)


def test_zero_means_at_once_or_off_where_it_can() -> None:
    chosen = config.from_args(["--shutdown-grace-period", "0", "--writable-layer-scan-period", "0"])
    assert (chosen.shutdown_grace, chosen.writable_layer_scan_period) == (0, 0)


@pytest.mark.parametrize("given, endpoint", [
    ("unix:///run/docker.sock", "unix:///run/docker.sock"),
    ("/run/docker.sock", "unix:///run/docker.sock"),  # as the Docker CLI reads DOCKER_HOST
    ("tcp://127.0.0.1:2376", "tcp://127.0.0.1:2376"),
    ("tcp://127.0.0.1", "tcp://127.0.0.1:2375"),
    ("tcp://[::1]", "tcp://[::1]:2375"),
    ("tcp://[::1]:2376/", "tcp://[::1]:2376"),
])
def test_docker_endpoints(given: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.from_args(["--docker-endpoint", given]).docker_endpoint == endpoint
    monkeypatch.setenv("DOCKER_HOST", given)
    assert config.from_args([]).docker_endpoint == endpoint
