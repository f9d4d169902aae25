"""Image volumes (KEP-4639): an OCI image's filesystem mounted read-only into a container.

Docker before 28 cannot mount an image, so the shim does it: the image's filesystem is
materialised once per image ID under the root directory (exported from a container that is
created from the image and never started), and that directory is bind-mounted read-only.
A `image_sub_path` binds one directory of it instead, and must exist. Directories of images
that no longer exist and that no container uses are removed when containers are removed.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import shutil
import tarfile
import threading
from collections.abc import Iterable, Iterator

import grpc

from . import labels
from .api import api_pb2 as api
from .container_convert import ImageVolume
from .docker_client import DockerClient
from .errors import CRIError, invalid_argument, not_found

log = logging.getLogger(__name__)

# Marks the never-started containers used to export an image, so that nothing lists them as pods'.
EXPORT_LABEL = "io.kubernetes.dockershim-py.image-volume-export"


class _ChunkReader(io.RawIOBase):
    """A file over Docker's stream of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _safe_member(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
    """tarfile's `tar` filter (no absolute paths, nothing outside the destination, no links leaving it),
    but keeping the image's mode bits, setuid and sticky included, as the image has them."""
    checked = tarfile.tar_filter(member, destination)
    return None if checked is None else checked.replace(mode=member.mode, deep=False)


def resolve_sub_path(rootfs: str, sub_path: str) -> str:
    """The directory (or file) `sub_path` names inside `rootfs`; it must exist and stay inside."""
    if os.path.isabs(sub_path):
        raise invalid_argument(f"image_sub_path {sub_path!r} must be relative to the image's root")
    resolved = os.path.realpath(os.path.join(rootfs, sub_path))
    if resolved != rootfs and not resolved.startswith(rootfs + os.sep):
        raise invalid_argument(f"image_sub_path {sub_path!r} leads outside the image")
    if not os.path.lexists(resolved):
        raise invalid_argument(f"image_sub_path {sub_path!r} does not exist in the image")
    return resolved


class ImageVolumes:
    def __init__(self, docker: DockerClient, root_directory: str) -> None:
        self._docker = docker
        self.root = os.path.join(os.path.abspath(root_directory), "image-volumes")
        self._lock = threading.Lock()
        self._preparing: dict[str, threading.Lock] = {}

    def prepare(self, mount: api.Mount) -> ImageVolume:
        """The host directory to bind for an image mount, materialising the image the first time."""
        where = f"image volume at {mount.container_path}"
        if not mount.readonly:
            raise invalid_argument(f"{where}: image volumes are read-only; set readonly")
        try:
            image_id = self._docker.inspect_image(mount.image.image)["Id"]
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"{where}: image {mount.image.image!r} is not on the node; pull it first") from exc
            raise
        rootfs = self._materialise(image_id)
        path = resolve_sub_path(rootfs, mount.image_sub_path) if mount.image_sub_path else rootfs
        return ImageVolume(host_path=path, image_id=image_id)

    def _materialise(self, image_id: str) -> str:
        digest = image_id.removeprefix("sha256:")
        directory = os.path.join(self.root, digest)
        rootfs = os.path.join(directory, "rootfs")
        if os.path.isdir(rootfs):
            return rootfs
        with self._lock:
            lock = self._preparing.setdefault(digest, threading.Lock())
        with lock:  # one export per image, however many containers ask at once
            if not os.path.isdir(rootfs):
                self._export(image_id, directory)
        with self._lock:
            self._preparing.pop(digest, None)
        return rootfs

    def _export(self, image_id: str, directory: str) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        staging = os.path.join(self.root, f".{os.path.basename(directory)}.{secrets.token_hex(4)}")
        staged_rootfs = os.path.join(staging, "rootfs")
        name = f"dockershim-py-image-volume-{image_id.removeprefix('sha256:')[:12]}-{secrets.token_hex(4)}"
        body = {"Image": image_id, "Entrypoint": ["/image-volume-export"], "Labels": labels.helper_labels(EXPORT_LABEL),
                "HostConfig": {"NetworkMode": "none"}}
        container_id = self._docker.create_container(name, body)
        try:
            os.makedirs(staged_rootfs)
            with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(self._docker.export_container(container_id))),
                              mode="r|") as archive:
                archive.extractall(staged_rootfs, numeric_owner=True, filter=_safe_member)
            os.rename(staging, directory)
            log.info("image volume: materialised %s in %s", image_id, directory)
        except (OSError, tarfile.TarError) as exc:
            raise CRIError(grpc.StatusCode.INTERNAL, f"cannot materialise image {image_id} for a volume: {exc}") from exc
        except CRIError as exc:  # the export container gone under us is worth a retry, as a lost connection
            code = grpc.StatusCode.UNAVAILABLE if exc.code == grpc.StatusCode.NOT_FOUND else exc.code
            raise CRIError(code, f"cannot materialise image {image_id} for a volume: {exc.message}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._remove_quietly(container_id)

    def _remove_quietly(self, container_id: str) -> None:
        try:
            self._docker.remove_container(container_id, force=True)
        except CRIError as exc:
            log.warning("image volume: could not remove export container %s: %s", container_id[:12], exc.message)

    def prune(self, images_present: Iterable[str], sources_in_use: Iterable[str]) -> None:
        """Remove the directories of images that are gone and that no container binds any more."""
        present = {image_id.removeprefix("sha256:") for image_id in images_present}
        used = {source[len(self.root) + 1:].split("/", 1)[0] for source in sources_in_use
                if source.startswith(self.root + "/")}
        for digest in self.materialised():
            if digest not in present and digest not in used:
                log.info("image volume: image %s is gone and unused; removing its directory", digest[:12])
                shutil.rmtree(os.path.join(self.root, digest), ignore_errors=True)

    def materialised(self) -> list[str]:
        try:
            return [name for name in os.listdir(self.root) if not name.startswith(".")]
        except FileNotFoundError:
            return []
