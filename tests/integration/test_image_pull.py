"""PullImage from real registries on 127.0.0.1: identity, credentials, errors and deadlines."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from conftest import AUTH_PASSWORD, AUTH_USER, PRIVATE_IMAGE, USER_NAME_IMAGE, USER_UID_GID_IMAGE
from dockershim_py.api import api_pb2 as api


def spec(reference: str) -> api.ImageSpec:
    return api.ImageSpec(image=reference)


def remove_locally(docker_api: docker.APIClient, reference: str) -> None:
    try:
        docker_api.remove_image(reference, force=True)
    except docker.errors.NotFound:
        pass


class SilentRegistry:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers: a registry that hangs."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._drain, args=(connection,), daemon=True).start()

    def _drain(self, connection: socket.socket) -> None:
        try:
            while connection.recv(65536):
                pass
        except OSError:
            pass
        self.closed.set()  # the client (dockerd) hung up

    def close(self) -> None:
        self._listener.close()
        for connection in self.connections:
            connection.close()


def assert_dockerd_gave_up(registry: SilentRegistry) -> None:
    """dockerd cannot abort its first registry request (10 s timeout), but a live pull retries after it."""
    assert registry.closed.wait(30), "dockerd never hung up on the registry"
    time.sleep(1.5)
    assert len(registry.connections) == 1, "dockerd went on pulling after the shim cancelled"


@pytest.fixture
def silent_registry() -> Iterator[SilentRegistry]:
    registry = SilentRegistry()
    yield registry
    registry.close()


def test_pull_returns_the_image_id_everywhere(images, docker_api) -> None:
    remove_locally(docker_api, USER_UID_GID_IMAGE)
    reply = images.PullImage(api.PullImageRequest(image=spec(USER_UID_GID_IMAGE)), timeout=60)
    inspect = docker_api.inspect_image(USER_UID_GID_IMAGE)
    assert reply.image_ref == inspect["Id"]
    assert reply.image_ref.startswith("sha256:")
    status = images.ImageStatus(api.ImageStatusRequest(image=spec(USER_UID_GID_IMAGE)), timeout=10)
    assert status.image.id == reply.image_ref
    listed = images.ListImages(api.ListImagesRequest(), timeout=10).images
    assert reply.image_ref in {image.id for image in listed}
    # The same identifier when the image is asked for by its digest.
    digest_reference = inspect["RepoDigests"][0]
    remove_locally(docker_api, USER_UID_GID_IMAGE)
    by_digest = images.PullImage(api.PullImageRequest(image=spec(digest_reference)), timeout=60)
    assert by_digest.image_ref == reply.image_ref
    docker_api.pull(USER_UID_GID_IMAGE)


def test_pulling_an_image_that_is_present_is_cheap_and_equal(images, docker_api) -> None:
    docker_api.pull(USER_NAME_IMAGE)
    first = images.PullImage(api.PullImageRequest(image=spec(USER_NAME_IMAGE)), timeout=60)
    second = images.PullImage(api.PullImageRequest(image=spec(USER_NAME_IMAGE)), timeout=60)
    assert first.image_ref == second.image_ref == docker_api.inspect_image(USER_NAME_IMAGE)["Id"]


def test_private_registry_without_credentials_is_unauthenticated(images, docker_api) -> None:
    remove_locally(docker_api, PRIVATE_IMAGE)
    with pytest.raises(grpc.RpcError) as caught:
        images.PullImage(api.PullImageRequest(image=spec(PRIVATE_IMAGE)), timeout=60)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no basic auth credentials" in caught.value.details()
    assert PRIVATE_IMAGE in caught.value.details()


def test_wrong_password_is_a_clear_auth_error(images, docker_api) -> None:
    remove_locally(docker_api, PRIVATE_IMAGE)
    auth = api.AuthConfig(username=AUTH_USER, password="wrong", server_address="127.0.0.1:5001")
    with pytest.raises(grpc.RpcError) as caught:
        images.PullImage(api.PullImageRequest(image=spec(PRIVATE_IMAGE), auth=auth), timeout=60)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authentication required" in caught.value.details()


@pytest.mark.parametrize(
    "auth",
    [
        api.AuthConfig(username=AUTH_USER, password=AUTH_PASSWORD),
        api.AuthConfig(auth=base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()),
    ],
    ids=["username-password", "auth-field"],
)
def test_credentials_from_the_request(images, docker_api, auth: api.AuthConfig) -> None:
    remove_locally(docker_api, PRIVATE_IMAGE)
    reply = images.PullImage(api.PullImageRequest(image=spec(PRIVATE_IMAGE), auth=auth), timeout=60)
    assert reply.image_ref == docker_api.inspect_image(PRIVATE_IMAGE)["Id"]


def test_credentials_from_a_docker_config_file(start_shim, docker_api, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {"127.0.0.1:5001": {"auth": token}}}))
    shim = start_shim(["--docker-config", str(config)])
    remove_locally(docker_api, PRIVATE_IMAGE)
    reply = shim.images.PullImage(api.PullImageRequest(image=spec(PRIVATE_IMAGE)), timeout=60)
    assert reply.image_ref == docker_api.inspect_image(PRIVATE_IMAGE)["Id"]
    assert "with credentials" in shim.log()


def test_missing_image_in_a_registry_is_not_found(images) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        images.PullImage(api.PullImageRequest(image=spec("127.0.0.1:5000/dspy/never-pushed:1")), timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "manifest unknown" in caught.value.details()


def test_a_missing_tag_and_digest_pull_names_the_image_once(images) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        images.PullImage(api.PullImageRequest(image=spec(f"127.0.0.1:5000/dspy/busybox:1.0@sha256:{'1' * 64}")),
                         timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details().count("pull image") == 1, caught.value.details()


def test_unreachable_registry_fails_fast_with_the_registrys_words(images) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        images.PullImage(api.PullImageRequest(image=spec(f"127.0.0.1:{port}/app:1")), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "connection refused" in caught.value.details()
    assert time.monotonic() - started < 30


def test_a_pull_without_progress_is_cancelled_by_the_progress_deadline(start_shim, silent_registry) -> None:
    shim = start_shim(["--image-pull-progress-deadline", "2s"])
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        shim.images.PullImage(api.PullImageRequest(image=spec(f"{silent_registry.address}/app:1")), timeout=60)
    elapsed = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no progress for 2s" in caught.value.details()
    assert 1.5 < elapsed < 15
    assert_dockerd_gave_up(silent_registry)


def test_the_callers_deadline_cancels_the_pull(start_shim, silent_registry) -> None:
    shim = start_shim()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        shim.images.PullImage(api.PullImageRequest(image=spec(f"{silent_registry.address}/app:1")), timeout=1.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    assert_dockerd_gave_up(silent_registry)
    # The shim is free for other work at once.
    assert shim.runtime.Version(api.VersionRequest(), timeout=5).runtime_name == "docker"
