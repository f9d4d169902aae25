"""ImageService: list, status, pull, remove and filesystem usage of Docker's images.

Image identity is the image ID (`sha256:…`) everywhere: PullImage returns it, ListImages and
ImageStatus report it, so the kubelet sees one identifier whatever registry an image came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from . import image_reference
from .api import api_pb2 as api
from .config import Config
from .docker_client import DockerClient
from .docker_storage import LayerSizes, filesystem_of, layer_store_directory, layers_mountpoint
from .errors import CRIError, failed_precondition, invalid_argument

log = logging.getLogger(__name__)

# Labels that pin an image against the kubelet's image garbage collection (containerd's and ours).
PIN_LABELS = {"io.cri-containerd.pinned": "pinned", "io.dockershim-py.pinned": "pinned"}
IMAGE_FS_CACHE_SECONDS = 30.0
PROGRESS_LOG_SECONDS = 10.0

# --- conversions (pure) ------------------------------------------------------------------------


def user_of(config_user: str) -> tuple[int | None, str]:
    """(uid, username) from an image's `User`: `1234`, `1234:5678`, `tester` or `tester:group`."""
    user = (config_user or "").split(":", 1)[0]
    if not user:
        return None, ""
    if user.isascii() and user.isdigit():  # "²" is a digit to Python, not a number to int()
        return int(user), ""
    return None, user


def real_tags(tags: Iterable[str] | None) -> list[str]:
    return [tag for tag in (tags or []) if tag and not tag.startswith("<none>")]


def pinned_references(sandbox_image: str) -> set[str]:
    """What a pinned image is known by in Docker: the sandbox image's name, or, given by digest, the
    `repository@digest` of its RepoDigests (Docker keeps no tag beside a digest)."""
    reference = image_reference.parse(sandbox_image)
    if reference.digest:
        return {f"{reference.repository}@{reference.digest}"}
    return {str(reference)}


def is_pinned(names: Iterable[str], labels: dict[str, str] | None, pinned: set[str]) -> bool:
    """`names`: the image's RepoTags and RepoDigests."""
    for key, value in (labels or {}).items():
        if PIN_LABELS.get(key) == value:
            return True
    for name in names:
        try:
            if image_reference.normalize(name) in pinned:
                return True
        except CRIError:
            continue
    return False


def image_from_inspect(inspect: dict[str, Any], pinned: set[str]) -> api.Image:
    config = inspect.get("Config") or {}
    tags, digests = real_tags(inspect.get("RepoTags")), real_tags(inspect.get("RepoDigests"))
    image = api.Image(
        id=inspect["Id"],
        repo_tags=tags,
        repo_digests=digests,
        size=int(inspect.get("Size") or 0),
        spec=api.ImageSpec(image=inspect["Id"]),
        pinned=is_pinned(tags + digests, config.get("Labels"), pinned),
    )
    uid, username = user_of(config.get("User") or "")
    if uid is not None:
        image.uid.value = uid
    image.username = username
    return image


def image_from_list_entry(entry: dict[str, Any], pinned: set[str]) -> api.Image:
    tags, digests = real_tags(entry.get("RepoTags")), real_tags(entry.get("RepoDigests"))
    return api.Image(
        id=entry["Id"],
        repo_tags=tags,
        repo_digests=digests,
        size=int(entry.get("Size") or 0),
        spec=api.ImageSpec(image=entry["Id"]),
        pinned=is_pinned(tags + digests, entry.get("Labels"), pinned),
    )


def verbose_info(inspect: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, str]:
    detail = {
        "id": inspect.get("Id"),
        "repoTags": inspect.get("RepoTags") or [],
        "repoDigests": inspect.get("RepoDigests") or [],
        "created": inspect.get("Created"),
        "architecture": inspect.get("Architecture"),
        "os": inspect.get("Os"),
        "size": inspect.get("Size"),
        "config": inspect.get("Config") or {},
        "rootfs": inspect.get("RootFS") or {},
        "history": history,
    }
    return {"info": json.dumps(detail, sort_keys=True)}


def auth_from_request(auth: api.AuthConfig | None) -> dict[str, str] | None:
    """Docker's X-Registry-Auth fields from the CRI AuthConfig, or None when it carries nothing."""
    if auth is None:
        return None
    fields = {
        "username": auth.username,
        "password": auth.password,
        "serveraddress": auth.server_address,
        "identitytoken": auth.identity_token,
        "registrytoken": auth.registry_token,
    }
    if auth.auth and not (auth.username or auth.password):
        fields["username"], fields["password"] = _decode_basic(auth.auth)
    fields = {key: value for key, value in fields.items() if value}
    return fields or None


def _decode_basic(encoded: str) -> tuple[str, str]:
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_argument(f"auth.auth is not base64 of 'user:password': {exc}") from exc
    if not sep:
        raise invalid_argument("auth.auth is not base64 of 'user:password': no ':' separator")
    return username, password


def _registry_host(key: str) -> str:
    """`https://index.docker.io/v1/` and `docker.io` name the same registry in config.json keys."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io"):
        return image_reference.DEFAULT_DOMAIN
    return host


def auth_from_docker_configs(paths: Iterable[str], registry: str) -> dict[str, str] | None:
    """The first credentials for `registry` in the given Docker config.json files."""
    for path in paths:
        path = os.path.expanduser(path)
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable Docker config %s: %s", path, exc)
            continue
        for key, entry in (document.get("auths") or {}).items():
            if _registry_host(key) != registry or not isinstance(entry, dict):
                continue
            found = {"serveraddress": registry}
            if entry.get("auth"):
                try:
                    found["username"], found["password"] = _decode_basic(entry["auth"])
                except CRIError:
                    log.warning("ignoring malformed auth for %s in %s", key, path)
                    continue
            for field in ("username", "password", "identitytoken", "registrytoken"):
                if entry.get(field):
                    found[field] = entry[field]
            if len(found) > 1:
                return found
            # No credentials in it (`docker login` leaves {} beside a credsStore): read on.
    return None


def registry_error(what: str, message: str) -> CRIError:
    """A registry's failure with its own words and the code that fits them."""
    lowered = message.lower()
    if any(word in lowered for word in ("unauthorized", "authentication required", "no basic auth", "denied")):
        code = grpc.StatusCode.UNAUTHENTICATED
        if "may require 'docker login'" in lowered or "does not exist" in lowered:
            code = grpc.StatusCode.NOT_FOUND
    elif any(word in lowered for word in ("manifest unknown", "not found", "does not exist")):
        code = grpc.StatusCode.NOT_FOUND
    elif any(word in lowered for word in ("toomanyrequests", "too many requests")):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED  # a registry's rate limit: tried again later
    elif any(word in lowered for word in ("connection refused", "no such host", "i/o timeout", "dial tcp",
                                          "timeout exceeded", "network is unreachable", "connection reset",
                                          "502 bad gateway", "503 service unavailable", "504 gateway",
                                          "service unavailable", "bad gateway")):
        code = grpc.StatusCode.UNAVAILABLE
    else:
        code = grpc.StatusCode.UNKNOWN
    return CRIError(code, f"{what}: {message}")


class PullProgress:
    """Keeps a pull's layer progress and logs it every few seconds, so a stuck pull is visible."""

    def __init__(self, reference: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.reference = reference
        self._clock = clock
        self._last_log = clock()
        self._layers: dict[str, tuple[int, int]] = {}

    def update(self, message: dict[str, Any]) -> None:
        if message.get("error"):
            detail = (message.get("errorDetail") or {}).get("message") or message["error"]
            raise registry_error(f"pull image {self.reference}", detail)
        layer = message.get("id")
        progress = message.get("progressDetail") or {}
        if layer and progress.get("total"):
            self._layers[layer] = (int(progress.get("current") or 0), int(progress["total"]))
        if self._clock() - self._last_log >= PROGRESS_LOG_SECONDS:
            self._last_log = self._clock()
            done = sum(current for current, _ in self._layers.values())
            total = sum(total for _, total in self._layers.values())
            log.info("pulling %s: %d layers, %d of %d bytes", self.reference, len(self._layers), done, total)


# --- the service (I/O) --------------------------------------------------------------------------


class ImageService:
    def __init__(self, docker: DockerClient, config: Config,
                 writable_layers_bytes: Callable[[], int] | None = None) -> None:
        """`writable_layers_bytes`: the containers' writable layers in all, for ImageFsInfo (else df's)."""
        self._docker = docker
        self._config = config
        self._pinned = pinned_references(config.pod_infra_container_image)
        self._writable_layers_bytes = writable_layers_bytes
        self._layer_sizes = LayerSizes()
        self._fs_lock = threading.Lock()
        self._fs_cache: tuple[float, tuple[list[api.FilesystemUsage], list[api.FilesystemUsage]]] | None = None

    def list_images(self, filter_reference: str = "") -> list[api.Image]:
        """Every image, or those a filter names: a repository's every tag and globs as Docker's
        `reference` filter matches them (`crictl images busybox`), else an ID, digest or full name."""
        if not filter_reference:
            return [image_from_list_entry(entry, self._pinned) for entry in self._docker.images()]
        try:
            matching = self._docker.images_matching(filter_reference)
        except CRIError as exc:
            if "syntax error in pattern" in exc.message:
                raise invalid_argument(f"image filter {filter_reference!r} is not a valid pattern") from exc
            raise
        if matching:
            return [image_from_list_entry(entry, self._pinned) for entry in matching]
        if any(character in filter_reference for character in "*?["):
            return []
        found = self._inspect_or_none(filter_reference)
        return [image_from_inspect(found, self._pinned)] if found else []

    def image_status(self, reference: str, verbose: bool) -> tuple[api.Image | None, dict[str, str]]:
        found = self._inspect_or_none(reference)
        if found is None:
            return None, {}
        image = image_from_inspect(found, self._pinned)
        info = verbose_info(found, self._docker.image_history(found["Id"])) if verbose else {}
        return image, info

    def pull_image(
        self,
        reference: str,
        auth: api.AuthConfig | None,
        register_cancel: Callable[[Callable[[], None]], bool],
    ) -> str:
        parsed = image_reference.parse(reference)
        credentials = auth_from_request(auth) or auth_from_docker_configs(
            self._config.docker_config_paths, parsed.registry
        )
        what = f"pull image {parsed}"
        progress = PullProgress(str(parsed))
        log.info("pulling %s%s", parsed, " with credentials" if credentials else "")
        started = time.monotonic()
        try:
            self._docker.pull_image(
                parsed.repository,
                parsed.digest or parsed.tag,
                credentials,
                self._config.image_pull_progress_deadline,
                progress.update,
                register_cancel,
            )
        except CRIError as exc:
            if exc.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                pulled = f"{parsed.repository}@{parsed.digest}" if parsed.digest else f"{parsed.repository}:{parsed.tag}"
                raise registry_error(what, exc.message.removeprefix(f"pull image {pulled}: ")) from exc
            raise
        image_id = self._docker.inspect_image(str(parsed))["Id"]
        log.info("pulled %s as %s in %.1fs", parsed, image_id, time.monotonic() - started)
        return image_id

    def remove_image(self, reference: str) -> None:
        """Remove by ID (every tag and digest), tag or digest; an image already gone is success.

        By ID, an image a container uses is refused before any of its tags is taken off (Docker
        would take off all but the last, then refuse that one).
        """
        if not reference:
            raise invalid_argument("image reference is empty")
        found = self._inspect_or_none(reference)
        if found is None:
            return
        names = real_tags(found.get("RepoTags")) + real_tags(found.get("RepoDigests"))
        if self._names_the_image_by_id(reference, found["Id"], names):
            users = [entry for entry in self._docker.list_containers({"ancestor": [found["Id"]]})
                     if entry.get("ImageID") == found["Id"]]
            if users:
                name = ((users[0].get("Names") or [""])[0]).lstrip("/") or users[0]["Id"][:12]
                raise failed_precondition(f"image {found['Id']} is used by container {name} ({users[0]['Id'][:12]}; "
                                          f"{len(users)} in all): remove them first")
            for name in names:
                self._remove_if_present(name, found["Id"])
            self._remove_if_present(found["Id"], found["Id"])
        else:  # by the image's own spelling: Docker takes a tag `81c` of image 81c4... for the ID
            self._remove_if_present(_name_of(reference, names) or reference, found["Id"])

    def image_fs_info(self) -> tuple[list[api.FilesystemUsage], list[api.FilesystemUsage]]:
        """The layer filesystem: image layers from Docker's layer store, writable layers as the stats
        worker measured them, inodes from statvfs. Only where the layer store is not on this node, or
        the layers are not measured, is `docker system df` asked, and its answer kept for 30 s: it
        walks every writable layer."""
        with self._fs_lock:
            now = time.monotonic()
            if self._fs_cache and now - self._fs_cache[0] < IMAGE_FS_CACHE_SECONDS:
                return self._fs_cache[1]
            info = self._docker.info()
            mountpoint = layers_mountpoint(info)
            image_bytes = self._layer_sizes.total(layer_store_directory(info))
            if image_bytes is None or self._writable_layers_bytes is None:
                from_df = True
                usage = self._docker.disk_usage()
                image_bytes = int(usage.get("LayersSize") or 0)
                container_bytes = sum(int(c.get("SizeRw") or 0) for c in usage.get("Containers") or [])
            else:
                from_df = False
                container_bytes = self._writable_layers_bytes()
            stat = filesystem_of(mountpoint)  # None for a Docker elsewhere: the inodes are left unset
            timestamp = time.time_ns()

            def filesystem(used_bytes: int) -> list[api.FilesystemUsage]:
                usage = api.FilesystemUsage(timestamp=timestamp, fs_id=api.FilesystemIdentifier(mountpoint=mountpoint))
                usage.used_bytes.value = used_bytes
                if stat is not None:
                    usage.inodes_used.value = stat.f_files - stat.f_ffree
                return [usage]

            answer = (filesystem(image_bytes), filesystem(container_bytes))
            self._fs_cache = (now, answer) if from_df else None
            return answer

    # --- helpers ---------------------------------------------------------------------------------

    def _inspect_or_none(self, reference: str) -> dict[str, Any] | None:
        if not reference:
            raise invalid_argument("image reference is empty")
        if not image_reference.is_image_id(reference):
            image_reference.parse(reference)  # malformed names are the caller's error, not "absent"
        try:  # from Docker, not the index: an image removed behind the shim's back a moment ago is gone
            return self._docker.inspect_image(reference, kept=False)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    @staticmethod
    def _names_the_image_by_id(reference: str, image_id: str, names: list[str]) -> bool:
        """An ID (or its prefix), not one of its names: a tag `81c` of image sha256:81c4... is a name."""
        if _name_of(reference, names):
            return False
        bare = image_id.removeprefix("sha256:")
        return reference == image_id or bare.startswith(reference.removeprefix("sha256:"))

    def _remove_if_present(self, name: str, image_id: str) -> None:
        try:
            self._docker.remove_image(name)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return
            if self._inspect_or_none(image_id) is None or self._inspect_or_none(name) is None:
                return  # a concurrent remove won the race (Docker then says "unrecognized image ID")
            raise


def _name_of(reference: str, names: list[str]) -> str:
    """The one of an image's `names` that `reference` means (`busybox` for docker.io/library/busybox:latest), or ""."""
    if reference in names:
        return reference
    try:
        wanted = image_reference.normalize(reference)
    except CRIError:
        return ""  # no name: `sha256:...`
    for name in names:
        try:
            if image_reference.normalize(name) == wanted:
                return name
        except CRIError:
            continue
    return ""
