"""The only door to dockerd: docker-py's APIClient with timeouts, retries and gRPC error codes.

Every other module calls this one, so that each Docker request a CRI call makes is visible here,
and every Docker failure reaches the kubelet as a status code it can act on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.auth
import docker.errors
import grpc
import requests.exceptions
import tenacity

from .errors import CRIError, deadline_exceeded, failed_precondition, invalid_argument, not_found, unavailable

log = logging.getLogger(__name__)

# The oldest Engine API this shim speaks (Docker 19.03); Debian 12's docker.io 20.10 speaks 1.41.
MIN_API_VERSION = "1.40"
# The newest Engine API this shim asks for; newer engines answer older versions too.
MAX_API_VERSION = "1.45"
# Health checks must answer fast even when a normal request may wait minutes.
HEALTH_TIMEOUT = 5.0


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def negotiate_api_version(server_version: str, server_min_version: str | None = None) -> str:
    """The API version to speak: the newest both sides know, refused below MIN_API_VERSION."""
    chosen = min(server_version, MAX_API_VERSION, key=_version_tuple)
    if _version_tuple(chosen) < _version_tuple(MIN_API_VERSION):
        raise failed_precondition(
            f"Docker Engine speaks API {server_version}, older than the {MIN_API_VERSION} "
            f"dockershim-py needs (Docker 19.03 or newer)"
        )
    if server_min_version and _version_tuple(chosen) < _version_tuple(server_min_version):
        raise failed_precondition(
            f"Docker Engine needs API {server_min_version} or newer, but dockershim-py speaks at most "
            f"{MAX_API_VERSION}"
        )
    return chosen


def translate(exc: Exception, what: str) -> CRIError:
    """Turn a docker-py or transport failure into a CRIError that names `what` was asked for."""
    if isinstance(exc, CRIError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return not_found(f"{what}: not found ({_explanation(exc)})")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        detail = _explanation(exc)
        if status == 409:
            return failed_precondition(f"{what}: conflict: {detail}")
        if status == 400:
            return invalid_argument(f"{what}: rejected by Docker: {detail}")
        if status == 401 or status == 403:
            return CRIError(grpc.StatusCode.PERMISSION_DENIED, f"{what}: {detail}")
        if status == 500:  # dockerd's own failure (or a registry's, for pulls): its words say what
            return CRIError(grpc.StatusCode.UNKNOWN, f"{what}: {detail}")
        return CRIError(grpc.StatusCode.UNKNOWN, f"{what}: Docker answered {status}: {detail}")
    if isinstance(exc, (requests.exceptions.ReadTimeout, socket.timeout, TimeoutError)):
        return deadline_exceeded(f"{what}: Docker did not answer in time ({exc})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return unavailable(f"{what}: cannot reach the Docker daemon: {_root_cause(exc)}")
    if isinstance(exc, docker.errors.DockerException):
        return unavailable(f"{what}: {exc}")
    return CRIError(grpc.StatusCode.INTERNAL, f"{what}: {type(exc).__name__}: {exc}")


def _explanation(exc: docker.errors.APIError) -> str:
    if exc.explanation:
        return str(exc.explanation)
    return str(exc)


def _root_cause(exc: BaseException) -> str:
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc) or type(exc).__name__


_retry_reads = tenacity.retry(
    retry=tenacity.retry_if_exception_type(requests.exceptions.ConnectionError),
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)


class DockerClient:
    """Thread-safe wrapper; the Engine API version is negotiated lazily, so the shim starts without dockerd."""

    def __init__(self, endpoint: str, timeout: float, pool_size: int = 32) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._api: docker.APIClient | None = None
        self._health_api: docker.APIClient | None = None

    # --- connection and negotiation -------------------------------------------------------------

    def _make(self, version: str, timeout: float) -> docker.APIClient:
        return docker.APIClient(
            base_url=self.endpoint, version=version, timeout=timeout, max_pool_size=self._pool_size
        )

    def _clients(self) -> tuple[docker.APIClient, docker.APIClient]:
        with self._lock:
            if self._api is not None and self._health_api is not None:
                return self._api, self._health_api
            probe = self._make(MIN_API_VERSION, HEALTH_TIMEOUT)
            try:
                server = probe.version(api_version=False)
            finally:
                probe.close()
            version = negotiate_api_version(server["ApiVersion"], server.get("MinAPIVersion"))
            self._api = self._make(version, self._timeout)
            self._health_api = self._make(version, HEALTH_TIMEOUT)
            log.info("connected to Docker %s at %s (API %s)", server.get("Version"), self.endpoint, version)
            return self._api, self._health_api

    def _forget_connection(self) -> None:
        """After a connection failure the daemon may come back as another version: negotiate again."""
        with self._lock:
            for client in (self._api, self._health_api):
                if client is not None:
                    client.close()
            self._api = self._health_api = None

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except requests.exceptions.ConnectionError as exc:
            self._forget_connection()
            raise translate(exc, what) from exc
        except Exception as exc:  # every failure leaves as a CRIError with a status code
            raise translate(exc, what) from exc

    def _read(self, what: str, fn: Callable[[docker.APIClient], Any], health: bool = False) -> Any:
        """An idempotent request: connection failures are retried a few times within a second."""

        @_retry_reads
        def attempt() -> Any:
            api, health_api = self._clients()
            try:
                return fn(health_api if health else api)
            except requests.exceptions.ConnectionError:
                self._forget_connection()
                raise

        with self._call(what):
            return attempt()

    def _write(self, what: str, fn: Callable[[docker.APIClient], Any]) -> Any:
        """A request with effects: never retried, a failure is reported as it is."""
        with self._call(what):
            api, _ = self._clients()
            return fn(api)

    # --- daemon ---------------------------------------------------------------------------------

    def ping(self) -> None:
        self._read("ping Docker", lambda api: api.ping(), health=True)

    def version(self) -> dict[str, Any]:
        return self._read("Docker version", lambda api: api.version(), health=True)

    def info(self) -> dict[str, Any]:
        return self._read("Docker info", lambda api: api.info(), health=True)

    def disk_usage(self) -> dict[str, Any]:
        return self._read("Docker disk usage", lambda api: api.df())

    # --- images ---------------------------------------------------------------------------------

    def images(self) -> list[dict[str, Any]]:
        return self._read("list images", lambda api: api.images())

    def inspect_image(self, reference: str) -> dict[str, Any]:
        return self._read(f"image {reference!r}", lambda api: api.inspect_image(reference))

    def image_history(self, image_id: str) -> list[dict[str, Any]]:
        return self._read(f"history of image {image_id}", lambda api: api.history(image_id))

    def remove_image(self, reference: str) -> None:
        self._write(f"remove image {reference!r}", lambda api: api.remove_image(reference, noprune=False))

    def pull_image(
        self,
        repository: str,
        tag_or_digest: str,
        auth: dict[str, str] | None,
        progress_deadline: float,
        on_message: Callable[[dict[str, Any]], None],
        register_cancel: Callable[[Callable[[], None]], None],
    ) -> None:
        """Pull, handing every progress message to `on_message`.

        A read that waits longer than `progress_deadline` for the next message ends the pull with
        DEADLINE_EXCEEDED; `register_cancel` receives a function that aborts the pull from
        another thread (closing the connection makes dockerd cancel it too).
        """
        what = f"pull image {repository}{'@' if ':' in tag_or_digest else ':'}{tag_or_digest}"
        headers = {"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else {}
        cancelled = threading.Event()
        with self._call(what):
            api, _ = self._clients()
            response = api._post(  # docker-py's pull() has no read timeout; this one has
                api._url("/images/create"),
                params={"fromImage": repository, "tag": tag_or_digest},
                headers=headers,
                stream=True,
                timeout=progress_deadline,
            )
            try:
                api._raise_for_status(response)
                raw_socket = api._get_raw_response_socket(response)

                def cancel() -> None:
                    cancelled.set()
                    with contextlib.suppress(OSError):
                        raw_socket.shutdown(socket.SHUT_RDWR)

                register_cancel(cancel)
                try:
                    for message in api._stream_helper(response, decode=True):
                        on_message(message)
                except (requests.exceptions.ConnectionError, OSError, ValueError) as exc:
                    if cancelled.is_set():
                        raise _cancelled(what) from exc
                    if _is_timeout(exc):
                        raise deadline_exceeded(
                            f"{what}: no progress for {progress_deadline:g}s "
                            f"(--image-pull-progress-deadline); pull cancelled"
                        ) from exc
                    raise
                if cancelled.is_set():
                    raise _cancelled(what)
            finally:
                response.close()


def _cancelled(what: str) -> CRIError:
    return CRIError(grpc.StatusCode.CANCELLED, f"{what}: cancelled: the caller went away or its deadline passed")


def _is_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (socket.timeout, TimeoutError, requests.exceptions.ReadTimeout)):
            return True
        if "timed out" in str(seen):
            return True
        seen = seen.__context__
    return False
