"""ListImages, ImageStatus, RemoveImage and ImageFsInfo against the real daemon."""

from __future__ import annotations

import io
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import docker
import grpc
import pytest

from conftest import BUSYBOX, PAUSE, USER_NAME_IMAGE, USER_UID_GID_IMAGE, USER_UID_IMAGE, wait_for
from containers_fixtures import Pod, fresh_pod  # noqa: F401 (fixture)
from dockershim_py.api import api_pb2 as api


def spec(reference: str) -> api.ImageSpec:
    return api.ImageSpec(image=reference)


@pytest.fixture
def fresh_image(docker_api: docker.APIClient) -> Iterator[Callable[..., str]]:
    """Builds an image of its own (a new ID) with the given tags; removed again afterwards."""
    made: list[str] = []

    def build(*tags: str, user: str = "") -> str:
        marker = uuid.uuid4().hex
        dockerfile = f"FROM {BUSYBOX}\nLABEL io.dockershim-py.test={marker}\n"
        if user:
            dockerfile += f"USER {user}\n"
        for _ in docker_api.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True, decode=True):
            pass
        image_id = next(
            image["Id"] for image in docker_api.images(filters={"label": f"io.dockershim-py.test={marker}"})
        )
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            docker_api.tag(image_id, repository, name)
        made.append(image_id)
        return image_id

    yield build
    for image_id in made:
        try:
            docker_api.remove_image(image_id, force=True)
        except docker.errors.NotFound:
            pass


def test_list_images_reports_ids_tags_digests_and_sizes(images, docker_api) -> None:
    listed = {image.id: image for image in images.ListImages(api.ListImagesRequest(), timeout=10).images}
    expected = docker_api.inspect_image(BUSYBOX)
    image = listed[expected["Id"]]
    assert BUSYBOX in image.repo_tags
    assert set(image.repo_digests) == set(expected["RepoDigests"])
    assert image.size == expected["Size"]
    assert image.spec.image == expected["Id"]
    assert all("<none>" not in tag for entry in listed.values() for tag in entry.repo_tags)


def test_list_images_with_a_filter(images, docker_api) -> None:
    reply = images.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec(BUSYBOX))), timeout=10)
    assert [image.id for image in reply.images] == [docker_api.inspect_image(BUSYBOX)["Id"]]
    absent = images.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec("absent/image:1"))), timeout=10)
    assert list(absent.images) == []


def test_list_images_filters_a_repository_without_its_tag_and_globs_as_docker_does(images, fresh_image) -> None:
    """`crictl images <repository>`: every tag of it, as Docker's reference filter (and cri-dockerd) matches."""
    repository = f"dspy-test/filtered-{uuid.uuid4().hex[:8]}"
    first, second = fresh_image(f"{repository}:1", f"{repository}:2"), fresh_image(f"{repository}-other:1")

    def listed(pattern: str) -> set[str]:
        return {image.id for image in images.ListImages(api.ListImagesRequest(filter=api.ImageFilter(
            image=spec(pattern))), timeout=10).images}

    assert listed(repository) == {first}
    assert listed(f"{repository}*") == {first, second}
    assert listed(f"{repository}:2") == {first}
    assert listed(f"docker.io/{repository}:1") == {first}  # a full name Docker's filter does not match
    assert listed(first) == {first}
    assert listed(f"{repository}-absent*") == set()
    with pytest.raises(grpc.RpcError) as caught:
        listed("[bad")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sandbox_image_is_pinned_and_others_are_not(images) -> None:
    listed = images.ListImages(api.ListImagesRequest(), timeout=10).images
    assert any(PAUSE in image.repo_tags and image.pinned for image in listed)
    assert all(not image.pinned for image in listed if BUSYBOX in image.repo_tags and PAUSE not in image.repo_tags)
    status = images.ImageStatus(api.ImageStatusRequest(image=spec(PAUSE)), timeout=10)
    assert status.image.pinned


@pytest.mark.parametrize(
    "reference, uid, username",
    [(USER_UID_IMAGE, 1234, ""), (USER_UID_GID_IMAGE, 1234, ""), (USER_NAME_IMAGE, None, "tester"), (BUSYBOX, None, "")],
)
def test_image_status_reports_the_user(images, docker_api, reference: str, uid, username: str) -> None:
    docker_api.pull(reference)  # the pull tests may have removed it
    reply = images.ImageStatus(api.ImageStatusRequest(image=spec(reference)), timeout=10)
    assert reply.image.id == docker_api.inspect_image(reference)["Id"]
    assert reference in reply.image.repo_tags
    if uid is None:
        assert not reply.image.HasField("uid")
    else:
        assert reply.image.uid.value == uid
    assert reply.image.username == username


def test_image_status_by_id_prefix_and_digest(images, docker_api) -> None:
    inspect = docker_api.inspect_image(BUSYBOX)
    by_id = images.ImageStatus(api.ImageStatusRequest(image=spec(inspect["Id"])), timeout=10)
    by_prefix = images.ImageStatus(api.ImageStatusRequest(image=spec(inspect["Id"][7:19])), timeout=10)
    by_digest = images.ImageStatus(api.ImageStatusRequest(image=spec(inspect["RepoDigests"][0])), timeout=10)
    assert by_id.image.id == by_prefix.image.id == by_digest.image.id == inspect["Id"]


def test_unknown_image_gives_an_empty_status(images) -> None:
    reply = images.ImageStatus(api.ImageStatusRequest(image=spec("127.0.0.1:5000/never/pushed:1")), timeout=10)
    assert not reply.HasField("image")
    assert not reply.info


@pytest.mark.parametrize("reference", ["", "Upper/Case", "bad ref", "busybox@sha256:xyz"])
def test_malformed_references_are_invalid_argument(images, reference: str) -> None:
    for call in (
        lambda: images.ImageStatus(api.ImageStatusRequest(image=spec(reference)), timeout=10),
        lambda: images.PullImage(api.PullImageRequest(image=spec(reference)), timeout=10),
        lambda: images.RemoveImage(api.RemoveImageRequest(image=spec(reference)), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert caught.value.details()


def test_verbose_image_status_carries_config_and_history(images, docker_api) -> None:
    reply = images.ImageStatus(api.ImageStatusRequest(image=spec(USER_UID_IMAGE), verbose=True), timeout=10)
    info = json.loads(reply.info["info"])
    assert info["id"] == reply.image.id
    assert info["config"]["User"] == "1234"
    assert info["config"]["Labels"]["io.dockershim-py.test"] == "user-uid"
    assert len(info["history"]) == len(docker_api.history(USER_UID_IMAGE))


def test_remove_by_tag_only_untags_when_other_tags_remain(images, docker_api, fresh_image) -> None:
    image_id = fresh_image("dspy-test/remove:a", "dspy-test/remove:b")
    images.RemoveImage(api.RemoveImageRequest(image=spec("dspy-test/remove:a")), timeout=30)
    assert docker_api.inspect_image(image_id)["RepoTags"] == ["dspy-test/remove:b"]
    images.RemoveImage(api.RemoveImageRequest(image=spec("dspy-test/remove:b")), timeout=30)
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_image(image_id)


def test_remove_by_id_removes_every_tag(images, docker_api, fresh_image) -> None:
    image_id = fresh_image("dspy-test/byid:a", "dspy-test/byid:b", "other-repo/byid:c")
    images.RemoveImage(api.RemoveImageRequest(image=spec(image_id)), timeout=30)
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_image(image_id)
    listed = images.ListImages(api.ListImagesRequest(), timeout=10).images
    assert image_id not in {image.id for image in listed}


def test_remove_by_short_id(images, docker_api, fresh_image) -> None:
    image_id = fresh_image("dspy-test/short:a", "dspy-test/short:b")
    images.RemoveImage(api.RemoveImageRequest(image=spec(image_id[7:19])), timeout=30)
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_image(image_id)


def test_remove_is_idempotent(images, fresh_image) -> None:
    image_id = fresh_image("dspy-test/twice:a")
    for _ in range(2):
        images.RemoveImage(api.RemoveImageRequest(image=spec(image_id)), timeout=30)
    images.RemoveImage(api.RemoveImageRequest(image=spec("dspy-test/never-existed:1")), timeout=30)


def test_concurrent_removes_of_one_image_both_succeed(images, docker_api, fresh_image) -> None:
    for attempt in range(3):
        image_id = fresh_image(f"dspy-test/race{attempt}:a", f"dspy-test/race{attempt}:b")
        errors: list[Exception] = []
        barrier = threading.Barrier(2)

        def remove() -> None:
            barrier.wait()
            try:
                images.RemoveImage(api.RemoveImageRequest(image=spec(image_id)), timeout=30)
            except grpc.RpcError as exc:
                errors.append(exc)

        workers = [threading.Thread(target=remove) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        with pytest.raises(docker.errors.NotFound):
            docker_api.inspect_image(image_id)


def test_image_in_use_by_a_container_is_a_failed_precondition(images, docker_api, fresh_image) -> None:
    """By ID, with several tags: refused before any tag is taken off (Docker takes off all but the last)."""
    tags = [f"dspy-test/in-use:{n}" for n in (1, 2)] + ["dspy-test/in-use-too:1"]
    image_id = fresh_image(*tags)
    container = docker_api.create_container(image_id, command=["true"])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            images.RemoveImage(api.RemoveImageRequest(image=spec(image_id)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert container["Id"][:12] in caught.value.details()
        assert sorted(docker_api.inspect_image(image_id)["RepoTags"]) == sorted(tags)
    finally:
        docker_api.remove_container(container["Id"], force=True)


def test_a_tag_that_looks_like_an_id_prefix_removes_only_that_tag(images, docker_api, fresh_image) -> None:
    image_id = fresh_image("dspy-test/hex-named:1")
    hex_name = image_id.removeprefix("sha256:")[:3]
    docker_api.tag(image_id, hex_name, "latest")
    try:
        images.RemoveImage(api.RemoveImageRequest(image=spec(hex_name)), timeout=30)
        assert docker_api.inspect_image(image_id)["RepoTags"] == ["dspy-test/hex-named:1"]
    finally:
        try:
            docker_api.remove_image(f"{hex_name}:latest")
        except docker.errors.NotFound:
            pass


def test_image_fs_info_describes_dockers_storage(images, docker_api) -> None:
    reply = images.ImageFsInfo(api.ImageFsInfoRequest(), timeout=60)
    [image_fs] = reply.image_filesystems
    [container_fs] = reply.container_filesystems
    info = docker_api.info()
    assert image_fs.fs_id.mountpoint.startswith(info["DockerRootDir"])
    assert os.path.isdir(image_fs.fs_id.mountpoint)
    # The layer store's figure is the one df gives: every layer once, however many images share it.
    assert image_fs.used_bytes.value == docker_api.df()["LayersSize"]
    assert image_fs.used_bytes.value >= docker_api.inspect_image(BUSYBOX)["Size"]
    assert image_fs.inodes_used.value > 0
    assert image_fs.timestamp > 0
    assert container_fs.fs_id.mountpoint == image_fs.fs_id.mountpoint
    assert container_fs.HasField("used_bytes")


def test_image_fs_info_counts_what_containers_write(images, fresh_pod: Pod) -> None:
    def container_bytes() -> int:
        return images.ImageFsInfo(api.ImageFsInfoRequest(), timeout=60).container_filesystems[0].used_bytes.value

    before = container_bytes()
    container_id = fresh_pod.run("writer", ["sh", "-c", "dd if=/dev/zero of=/blob bs=1M count=3 && sleep 3600"])
    assert wait_for(lambda: fresh_pod.exec(container_id, ["test", "-s", "/blob"]).exit_code == 0)
    grown = wait_for(lambda: container_bytes() - before >= 3 << 20, timeout=30)
    assert grown, f"ImageFsInfo's container bytes went from {before} to {container_bytes()} after a 3 MiB write"
