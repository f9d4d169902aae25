import base64
import json
from pathlib import Path

import grpc
import pytest

from dockershim_py import image
from dockershim_py.api import api_pb2 as api
from dockershim_py.errors import CRIError


@pytest.mark.parametrize(
    "user, expected",
    [
        ("", (None, "")),
        ("0", (0, "")),
        ("1234", (1234, "")),
        ("1234:5678", (1234, "")),
        ("tester", (None, "tester")),
        ("tester:testgroup", (None, "tester")),
        ("²", (None, "²")),  # a digit to str.isdigit, not a number: a name, which Docker would not find
    ],
)
def test_user_of_image_config(user: str, expected: tuple) -> None:
    assert image.user_of(user) == expected


def test_image_from_inspect_maps_every_field() -> None:
    inspect = {
        "Id": "sha256:" + "1" * 64,
        "RepoTags": ["127.0.0.1:5000/dspy/busybox:1.0", "<none>:<none>"],
        "RepoDigests": ["127.0.0.1:5000/dspy/busybox@sha256:" + "2" * 64],
        "Size": 2970000,
        "Config": {"User": "1234:5678", "Labels": None},
    }
    result = image.image_from_inspect(inspect, pinned=set())
    assert result.id == inspect["Id"]
    assert list(result.repo_tags) == ["127.0.0.1:5000/dspy/busybox:1.0"]
    assert list(result.repo_digests) == inspect["RepoDigests"]
    assert result.size == 2970000
    assert result.HasField("uid") and result.uid.value == 1234
    assert result.username == ""
    assert result.spec.image == inspect["Id"]
    assert not result.pinned


def test_image_without_user_has_no_uid() -> None:
    result = image.image_from_inspect({"Id": "sha256:x", "Config": {}}, set())
    assert not result.HasField("uid")
    assert result.username == ""


def test_pinned_by_sandbox_image_or_label() -> None:
    pinned = {"registry.k8s.io/pause:3.10"}
    assert image.is_pinned(["registry.k8s.io/pause:3.10"], None, pinned)
    assert not image.is_pinned(["registry.k8s.io/pause:3.9"], None, pinned)
    assert image.is_pinned(["busybox:latest"], {"io.cri-containerd.pinned": "pinned"}, set())
    assert image.is_pinned([], {"io.dockershim-py.pinned": "pinned"}, set())
    assert not image.is_pinned([], {"io.cri-containerd.pinned": "no"}, set())


def test_a_sandbox_image_given_by_digest_pins_the_image_with_that_repo_digest() -> None:
    digest = "sha256:" + "c" * 64
    for sandbox_image in (f"registry.k8s.io/pause@{digest}", f"registry.k8s.io/pause:3.10@{digest}"):
        pinned = image.pinned_references(sandbox_image)
        entry = {"Id": "sha256:" + "d" * 64, "RepoTags": None, "RepoDigests": [f"registry.k8s.io/pause@{digest}"]}
        assert image.image_from_list_entry(entry, pinned).pinned
        other = {**entry, "RepoDigests": [f"registry.k8s.io/pause@sha256:{'e' * 64}"]}
        assert not image.image_from_list_entry(other, pinned).pinned
    assert image.pinned_references("pause:3.10") == {"docker.io/library/pause:3.10"}


def test_docker_hub_short_tags_match_the_pinned_reference() -> None:
    assert image.is_pinned(["busybox:latest"], None, {"docker.io/library/busybox:latest"})


def test_auth_from_request() -> None:
    assert image.auth_from_request(None) is None
    assert image.auth_from_request(api.AuthConfig()) is None
    assert image.auth_from_request(api.AuthConfig(username="u", password="p", server_address="r")) == {
        "username": "u", "password": "p", "serveraddress": "r",
    }
    encoded = base64.b64encode(b"alice:s3:cret").decode()
    assert image.auth_from_request(api.AuthConfig(auth=encoded)) == {"username": "alice", "password": "s3:cret"}
    assert image.auth_from_request(api.AuthConfig(identity_token="tok")) == {"identitytoken": "tok"}
    assert image.auth_from_request(api.AuthConfig(registry_token="rt")) == {"registrytoken": "rt"}


@pytest.mark.parametrize("bad", ["%%%", base64.b64encode(b"no-separator").decode()])
def test_malformed_auth_is_invalid_argument(bad: str) -> None:
    with pytest.raises(CRIError) as caught:
        image.auth_from_request(api.AuthConfig(auth=bad))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_auth_from_docker_configs(tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    first.write_text(json.dumps({"auths": {"other.example": {"auth": base64.b64encode(b"x:y").decode()}}}))
    second.write_text(json.dumps({"auths": {
        "http://127.0.0.1:5001/v1/": {"auth": base64.b64encode(b"dspy-user:dspy-pass").decode()},
        "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
    }}))
    paths = [str(tmp_path / "missing.json"), str(first), str(second)]
    assert image.auth_from_docker_configs(paths, "127.0.0.1:5001") == {
        "serveraddress": "127.0.0.1:5001", "username": "dspy-user", "password": "dspy-pass",
    }
    assert image.auth_from_docker_configs(paths, "docker.io")["username"] == "hub"
    assert image.auth_from_docker_configs(paths, "nowhere.example") is None


def test_an_entry_without_credentials_does_not_hide_a_later_files(tmp_path: Path) -> None:
    """`docker login` beside a credsStore leaves {} in config.json: the next file's credentials count."""
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    first.write_text(json.dumps({"auths": {"127.0.0.1:5001": {}}, "credsStore": "desktop"}))
    second.write_text(json.dumps({"auths": {"127.0.0.1:5001": {"username": "u", "password": "p"}}}))
    assert image.auth_from_docker_configs([str(first), str(second)], "127.0.0.1:5001") == {
        "serveraddress": "127.0.0.1:5001", "username": "u", "password": "p"}
    assert image.auth_from_docker_configs([str(first)], "127.0.0.1:5001") is None


def test_unreadable_docker_config_is_skipped(tmp_path: Path) -> None:
    broken = tmp_path / "config.json"
    broken.write_text("{not json")
    assert image.auth_from_docker_configs([str(broken)], "r") is None


@pytest.mark.parametrize(
    "message, code",
    [
        ("unauthorized: authentication required", grpc.StatusCode.UNAUTHENTICATED),
        ("Head \"http://r/v2/x/manifests/1\": no basic auth credentials", grpc.StatusCode.UNAUTHENTICATED),
        ("pull access denied for x, repository does not exist or may require 'docker login'",
         grpc.StatusCode.NOT_FOUND),
        ("manifest for r/x:1 not found: manifest unknown", grpc.StatusCode.NOT_FOUND),
        ("Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
         grpc.StatusCode.UNAVAILABLE),
        ("something else entirely", grpc.StatusCode.UNKNOWN),
        ("toomanyrequests: You have reached your pull rate limit", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("received unexpected HTTP status: 503 Service Unavailable", grpc.StatusCode.UNAVAILABLE),
        ("received unexpected HTTP status: 502 Bad Gateway", grpc.StatusCode.UNAVAILABLE),
        ("received unexpected HTTP status: 504 Gateway Timeout", grpc.StatusCode.UNAVAILABLE),
        ("Get \"http://127.0.0.1:5429/v2/\": dial tcp 127.0.0.1:5429: connect: connection refused",
         grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_registry_errors_keep_the_registry_words(message: str, code: grpc.StatusCode) -> None:
    error = image.registry_error("pull image r/x:1", message)
    assert error.code == code
    assert error.message == f"pull image r/x:1: {message}"


def test_pull_progress_raises_the_stream_error_and_logs_progress(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = image.PullProgress("r/x:1", clock=lambda: now[0])
    progress.update({"status": "Downloading", "id": "layer1", "progressDetail": {"current": 10, "total": 100}})
    now[0] = 11.0
    with caplog.at_level("INFO"):
        progress.update({"status": "Downloading", "id": "layer1", "progressDetail": {"current": 50, "total": 100}})
    assert "1 layers, 50 of 100 bytes" in caplog.text
    with pytest.raises(CRIError) as caught:
        progress.update({"error": "x", "errorDetail": {"message": "unauthorized: authentication required"}})
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
