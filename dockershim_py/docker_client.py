"""The only door to dockerd: docker-py's APIClient with timeouts, retries and gRPC error codes.

Every other module calls this one, so that each Docker request a CRI call makes is visible here,
and every Docker failure reaches the kubelet as a status code it can act on. The container calls
a churning node makes by the hundred a minute (create, start, stop, remove, inspect, list) go on
kept-alive connections of this module's own, framed by `docker_http`: docker-py's requests
machinery costs about 1 ms of CPU a request here, http.client about 0.3 ms, and a request framed
by `docker_http` under 0.2 ms.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import re
import select
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import docker
import docker.auth
import docker.errors
import docker.transport
import docker.utils
import grpc
import requests.exceptions
import tenacity

from . import inline, naming, telemetry
from .docker_http import END, MAX_HEAD_BYTES, NEED_DATA, Head, ProtocolError, ResponseReader, request_bytes
from .errors import CRIError, deadline_exceeded, failed_precondition, invalid_argument, not_found, unavailable

log = logging.getLogger(__name__)

# The oldest Engine API this shim speaks (Docker 19.03); Debian 12's docker.io 20.10 speaks 1.41.
MIN_API_VERSION = "1.40"
# The newest Engine API this shim asks for; newer engines answer older versions too.
MAX_API_VERSION = "1.45"
# Health checks must answer fast even when a normal request may wait minutes.
HEALTH_TIMEOUT = 5.0
# A failed version probe answers the calls that wait behind it for this long, instead of each probing.
PROBE_RETRY_SECONDS = 1.0
# `docker info` costs dockerd 10-15 ms with a few hundred containers (moby#45842), and what the
# shim reads from it (cgroup driver, runtimes, storage root) changes only with a daemon restart.
INFO_MAX_AGE_SECONDS = 60.0
# Docker's update body fields, as docker-py's update_container names them.
_UPDATE_ARGUMENTS = {
    "CpuPeriod": "cpu_period", "CpuQuota": "cpu_quota", "CpuShares": "cpu_shares", "CpusetCpus": "cpuset_cpus",
    "CpusetMems": "cpuset_mems", "Memory": "mem_limit", "MemorySwap": "memswap_limit",
}


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
    if isinstance(exc, docker.errors.APIError):
        return status_error(what, 404 if isinstance(exc, docker.errors.NotFound) else exc.status_code,
                            _explanation(exc))
    if isinstance(exc, (requests.exceptions.ReadTimeout, socket.timeout, TimeoutError)):
        return deadline_exceeded(f"{what}: Docker did not answer in time ({exc})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return unavailable(f"{what}: cannot reach the Docker daemon: {_root_cause(exc)}")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return not_found(f"{what}: not found (Docker redirected the request elsewhere)")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return unavailable(f"{what}: Docker's answer was cut off: {_root_cause(exc)}")
    if isinstance(exc, docker.errors.NullResource):  # an empty ID, refused before anything was sent
        return invalid_argument(f"{what}: {exc}")
    if isinstance(exc, docker.errors.DockerException):
        return unavailable(f"{what}: {exc}")
    return CRIError(grpc.StatusCode.INTERNAL, f"{what}: {type(exc).__name__}: {exc}")


class DockerStatusError(CRIError):
    """A failure Docker answered with an HTTP status, kept for callers that read one apart."""

    def __init__(self, code: grpc.StatusCode, message: str, status: int | None) -> None:
        super().__init__(code, message)
        self.status = status


def status_error(what: str, status: int | None, detail: str) -> CRIError:
    """Docker's HTTP error status, and its message, as a gRPC status."""
    error = _status_error(what, status, detail)
    return DockerStatusError(error.code, error.message, status)


def _status_error(what: str, status: int | None, detail: str) -> CRIError:
    if status == 404:
        return not_found(f"{what}: not found ({detail})")
    if status == 409:
        return failed_precondition(f"{what}: conflict: {detail}")
    if status == 400:
        return invalid_argument(f"{what}: rejected by Docker: {detail}")
    if status == 401 or status == 403:
        return CRIError(grpc.StatusCode.PERMISSION_DENIED, f"{what}: {detail}")
    if status == 500:  # dockerd's own failure (or a registry's, for pulls): its words say what
        return CRIError(grpc.StatusCode.UNKNOWN, f"{what}: {detail}")
    if status in _REDIRECTS:
        return not_found(f"{what}: not found (Docker redirected the request elsewhere)")
    if status in (502, 503, 504):  # a proxy in front of dockerd, or dockerd itself, not serving now
        return unavailable(f"{what}: Docker is not available (it answered {status}): {detail}")
    return CRIError(grpc.StatusCode.UNKNOWN, f"{what}: Docker answered {status}: {detail}")


def _explanation(exc: docker.errors.APIError) -> str:
    if exc.explanation:
        return str(exc.explanation)
    return str(exc)


def _root_cause(exc: BaseException) -> str:
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc) or type(exc).__name__


_retry_reads = tenacity.retry(
    retry=tenacity.retry_if_exception_type((requests.exceptions.ConnectionError,
                                            requests.exceptions.ChunkedEncodingError)),
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)
# Kept-alive connections left idle for the next container request; more at once are closed after use.
KEPT_CONNECTIONS = 16
RECEIVE_BYTES = 64 * 1024
TAR_OVERHEAD_BYTES = 64 * 1024  # headers and padding around one file in an archive answer


class _ConnectionLost(Exception):
    """dockerd could not be reached, or the connection broke before it answered."""


_retry_lost = tenacity.retry(
    retry=tenacity.retry_if_exception_type(_ConnectionLost),
    stop=tenacity.stop_after_attempt(2),
    wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)


# dockerd's log of recent events for `since` queries holds this many (eventsLimit in moby's
# daemon/events), of every type.
DOCKER_EVENTS_KEPT = 256

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _measured(method: _Method) -> _Method:
    """Counts and times a Docker request under its method's name (dockershim_py_docker_requests_total)."""
    operation = telemetry.DockerOperation(method.__name__.lstrip("_"))

    @functools.wraps(method)
    def measured(*args: Any, **kwargs: Any) -> Any:
        inline.may_wait(method.__name__)
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return method(*args, **kwargs)
        except CRIError as exc:
            code = exc.code
            raise
        except Exception:  # a callback's own failure, say: not a success
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            operation.finished(code, time.monotonic() - started)

    return measured  # type: ignore[return-value]


class _OnePoolUnixAdapter(docker.transport.UnixHTTPAdapter):
    """One connection pool for every request to the socket.

    docker-py keys its unix-socket pools by the whole URL and keeps 25 of them: past that, each
    inspect of another container opened a fresh connection and closed an old pool's, which cost
    dockerd an accept and the shim a handshake per request.
    """

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


class DockerClient:
    """Thread-safe wrapper; the Engine API version is negotiated lazily, so the shim starts without dockerd."""

    def __init__(self, endpoint: str, timeout: float, pool_size: int = 32) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._negotiation_lock = threading.Lock()
        self._probe_failure: tuple[float, str] | None = None  # (when, why) of the last failed version probe
        self._api: docker.APIClient | None = None
        self._health_api: docker.APIClient | None = None
        self._api_version = MIN_API_VERSION
        self._info: tuple[float, dict[str, Any]] | None = None  # (when, `docker info`)
        self._kept: list[socket.socket] = []  # idle connections, alive as far as is known

    # --- connection and negotiation -------------------------------------------------------------

    def _make(self, version: str, timeout: float) -> docker.APIClient:
        api = docker.APIClient(
            base_url=self.endpoint, version=version, timeout=timeout, max_pool_size=self._pool_size
        )
        per_url = api._custom_adapter
        if isinstance(per_url, docker.transport.UnixHTTPAdapter):
            shared = _OnePoolUnixAdapter(per_url.socket_path, timeout, max_pool_size=self._pool_size)
            per_url.close()
            api._custom_adapter = shared
            api.mount("http+docker://", shared)
            api.trust_env = False  # no proxy or netrc lookup per request: a local socket needs neither
        api.max_redirects = 0  # Docker redirects a path it cleaned (`../` in a name): not what was asked for
        return api

    def _clients(self) -> tuple[docker.APIClient, docker.APIClient]:
        """The negotiated clients. One version probe at a time, outside `_lock`, and a probe that
        failed a moment ago answers the calls behind it at once: they queued 5 s apiece behind
        the lock while a slow dockerd answered none."""
        with self._lock:
            if self._api is not None and self._health_api is not None:
                return self._api, self._health_api
        with self._negotiation_lock:
            with self._lock:
                if self._api is not None and self._health_api is not None:
                    return self._api, self._health_api
            failed = self._probe_failure
            if failed is not None and time.monotonic() - failed[0] < PROBE_RETRY_SECONDS:
                raise requests.exceptions.ConnectionError(f"Docker's version probe failed just now: {failed[1]}")
            probe = self._make(MIN_API_VERSION, min(HEALTH_TIMEOUT, self._timeout))
            try:
                server = probe.version(api_version=False)
            except Exception as exc:
                self._probe_failure = (time.monotonic(), _root_cause(exc))
                raise
            finally:
                probe.close()
            self._probe_failure = None
            version = negotiate_api_version(server["ApiVersion"], server.get("MinAPIVersion"))
            api, health_api = self._make(version, self._timeout), self._make(version, HEALTH_TIMEOUT)
            with self._lock:
                self._api_version = version
                self._api, self._health_api = api, health_api
            log.info("connected to Docker %s at %s (API %s)", server.get("Version"), self.endpoint, version)
            return api, health_api

    def _forget_connection(self) -> None:
        """After a connection failure the daemon may come back as another version: negotiate again."""
        with self._lock:
            for client in (self._api, self._health_api):
                if client is not None:
                    client.close()
            self._api = self._health_api = None
            self._info = None
            kept, self._kept = self._kept, []
        for connection in kept:
            connection.close()

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        inline.may_wait(what)
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
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
                self._forget_connection()
                raise

        with self._call(what):
            return attempt()

    def _write(self, what: str, fn: Callable[[docker.APIClient], Any]) -> Any:
        """A request with effects: never retried, a failure is reported as it is."""
        with self._call(what):
            api, _ = self._clients()
            return fn(api)

    def _request(self, what: str, method: str, path: str, *, query: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None, timeout: float | None = None, idempotent: bool,
                 answer_is_json: bool = True) -> Any:
        """One request on a kept connection: JSON in and out (or the answer's bytes, when it is not
        JSON), and Docker's error status as a CRIError.

        Only an idempotent request is tried again when the connection fails, as `_read` does.
        """
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        payload = None if body is None else json.dumps({key: value for key, value in body.items()
                                                        if value is not None}).encode()

        def attempt() -> Any:
            try:
                self._clients()  # the API version, negotiated once
            except requests.exceptions.ConnectionError as exc:
                raise _ConnectionLost(_root_cause(exc)) from exc
            return self._exchange(what, method, f"/v{self._api_version}{path}{suffix}", payload,
                                  self._timeout if timeout is None else timeout, answer_is_json)

        with self._call(what):
            try:
                try:
                    return attempt()
                except _ConnectionLost:
                    if not idempotent:
                        raise
                    return _retry_lost(attempt)()
            except _ConnectionLost as exc:
                self._forget_connection()
                raise unavailable(f"{what}: cannot reach the Docker daemon: {exc}") from exc

    def _exchange(self, what: str, method: str, target: str, payload: bytes | None, timeout: float,
                  answer_is_json: bool = True) -> Any:
        headers = {"Content-Type": "application/json"} if payload is not None else None
        request = request_bytes(method, target, payload, headers)
        reader = ResponseReader()
        connection = None
        try:
            connection = self._take_connection()
            connection.settimeout(timeout)
            connection.sendall(request)
            head = _read_head(connection, reader)
            data = b"".join(_body_pieces(connection, reader))
        except (socket.timeout, TimeoutError) as exc:
            _close(connection)
            raise deadline_exceeded(f"{what}: Docker did not answer in time ({exc})") from exc
        except (OSError, ProtocolError) as exc:
            _close(connection)
            raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
        if reader.reusable:
            self._give_back(connection)
        else:
            connection.close()
        if head.status >= 400 or head.status in _REDIRECTS:  # 304, not modified, is a success
            raise status_error(what, head.status, _message(data))
        if not answer_is_json:
            return data
        try:
            return json.loads(data) if data else None
        except ValueError as exc:
            raise CRIError(grpc.StatusCode.INTERNAL, f"{what}: unreadable answer from Docker: {exc}") from exc

    def _take_connection(self) -> socket.socket:
        """An idle kept connection that dockerd has not closed meanwhile, or a new one."""
        while True:
            with self._lock:
                if not self._kept:
                    return self._open_socket(self._timeout)
                connection = self._kept.pop()
            if not _readable(connection):
                return connection
            connection.close()  # readable while idle: closed by dockerd (or out of step)

    def _give_back(self, connection: socket.socket) -> None:
        with self._lock:
            if len(self._kept) < KEPT_CONNECTIONS:
                self._kept.append(connection)
                return
        connection.close()

    # --- daemon ---------------------------------------------------------------------------------

    @_measured
    def ping(self) -> None:
        """On a kept connection, as every request: Status then tells of the path every call takes,
        for 0.12 ms of CPU where docker-py's ping took 0.8."""
        self._request("ping Docker", "GET", "/_ping", timeout=HEALTH_TIMEOUT, idempotent=True, answer_is_json=False)

    @_measured
    def version(self) -> dict[str, Any]:
        return self._read("Docker version", lambda api: api.version(), health=True)

    def info(self, max_age: float = INFO_MAX_AGE_SECONDS) -> dict[str, Any]:
        """`docker info`, asked again when older than `max_age` seconds or after a lost connection."""
        kept = self._info
        if kept is not None and time.monotonic() - kept[0] < max_age:
            return kept[1]
        info = self._docker_info()
        self._info = (time.monotonic(), info)
        return info

    def runtime_name(self, runtime: str) -> str:
        """The runtime Docker runs a container of `runtime` with: its default for none."""
        return runtime or self.info().get("DefaultRuntime", "")

    @_measured
    def _docker_info(self) -> dict[str, Any]:
        return self._read("Docker info", lambda api: api.info(), health=True)

    @_measured
    def disk_usage(self) -> dict[str, Any]:
        return self._read("Docker disk usage", lambda api: api.df())

    # --- stats ----------------------------------------------------------------------------------

    @_measured
    def writable_layer_size(self, container_id: str) -> int:
        """The writable layer's bytes as dockerd measures them (`inspect size=1`: a full walk
        of the layer inside dockerd), for storage drivers the shim cannot walk itself.
        Slow: only the stats' background worker calls it, never a request."""

        def inspect_with_size(api: docker.APIClient) -> dict[str, Any]:
            url = api._url("/containers/{0}/json", container_id)
            return api._result(api._get(url, params={"size": 1}), json=True)

        return int(self._read(f"size of container {container_id}", inspect_with_size).get("SizeRw") or 0)

    # --- images ---------------------------------------------------------------------------------

    @_measured
    def images(self) -> list[dict[str, Any]]:
        return self._request("list images", "GET", "/images/json", idempotent=True)

    @_measured
    def images_matching(self, pattern: str) -> list[dict[str, Any]]:
        """Docker's `reference` filter: every tag of a repository, or a glob (`repo/*`), as the CLI matches."""
        return self._request(f"list images matching {pattern!r}", "GET", "/images/json",
                             query={"filters": json.dumps({"reference": [pattern]})}, idempotent=True)

    @_measured
    def inspect_image(self, reference: str, kept: bool = True) -> dict[str, Any]:
        """Always asks Docker; `kept` is for the index's override, where True lets a kept answer do."""
        return self._read(f"image {reference!r}", lambda api: api.inspect_image(reference))

    @_measured
    def image_history(self, image_id: str) -> list[dict[str, Any]]:
        return self._read(f"history of image {image_id}", lambda api: api.history(image_id))

    @_measured
    def remove_image(self, reference: str) -> None:
        self._write(f"remove image {reference!r}", lambda api: api.remove_image(reference, noprune=False))

    @_measured
    def pull_image(
        self,
        repository: str,
        tag_or_digest: str,
        auth: dict[str, str] | None,
        progress_deadline: float,
        on_message: Callable[[dict[str, Any]], None],
        register_cancel: Callable[[Callable[[], None]], bool],
    ) -> None:
        """Pull, handing every progress message to `on_message`.

        docker-py's pull has no read timeout and no way to abort it: a wait longer than
        `progress_deadline` for the next message (or for dockerd's first answer) ends this one with
        DEADLINE_EXCEEDED, and `register_cancel` gets a function that aborts it.
        """
        what = f"pull image {repository}{'@' if ':' in tag_or_digest else ':'}{tag_or_digest}"
        headers = {"Content-Type": "text/plain"}
        if auth:
            headers["X-Registry-Auth"] = docker.auth.encode_header(auth).decode()
        query = urllib.parse.urlencode({"fromImage": repository, "tag": tag_or_digest})
        self._json_stream(
            what, "POST", f"/images/create?{query}", headers, progress_deadline, on_message, register_cancel,
            timed_out=f"no progress for {progress_deadline:g}s (--image-pull-progress-deadline); pull cancelled",
        )

    def follow_events(
        self,
        on_event: Callable[[dict[str, Any]], None],
        register_cancel: Callable[[Callable[[], None]], bool],
        types: tuple[str, ...],
        actions: tuple[str, ...],
        since: float | None = None,
    ) -> None:
        """Hand Docker's events of these object `types` and `actions` (from `since`, a Unix time) to
        `on_event` until the stream ends."""
        self._json_stream("follow Docker events", "GET", _events_path((types, actions), since), {}, None,
                          on_event, register_cancel)

    @_measured
    def past_events(self, since: float, until: float) -> list[dict[str, Any]]:
        """Every event Docker logged between two Unix times, of any type: dockerd keeps only its last
        DOCKER_EVENTS_KEPT, and only the whole count tells whether older ones fell out."""
        logged: list[dict[str, Any]] = []
        self._json_stream("read Docker's recent events", "GET", _events_path(None, since, until), {},
                          self._timeout, logged.append, lambda cancel: True)
        return logged

    def catch_up(self) -> None:
        """Make every change Docker has made so far show in the next read; direct reads always do."""

    def _json_stream(
        self,
        what: str,
        method: str,
        path: str,
        headers: dict[str, str],
        timeout: float | None,
        on_message: Callable[[dict[str, Any]], None],
        register_cancel: Callable[[Callable[[], None]], bool],
        timed_out: str = "Docker went quiet",
    ) -> None:
        """A streamed JSON answer read on a connection of our own, so it can time out and be aborted.

        A wait longer than `timeout` for the next message ends it with DEADLINE_EXCEEDED; the
        function given to `register_cancel` aborts it from another thread (CANCELLED). Either way
        the connection closes, which makes dockerd stop the work behind it.
        """
        cancelled = threading.Event()
        with self._call(what):
            self._clients()
            connection = self._raw_socket(timeout)

            def cancel() -> None:
                cancelled.set()
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

            try:
                if not register_cancel(cancel):  # the call ended before its request went out
                    cancel()
                connection.sendall(request_bytes(method, f"/v{self._api_version}{path}", headers=headers))
                reader = ResponseReader()
                head = _read_head(connection, reader)
                if head.status != 200:
                    raise status_error(what, head.status, _message(b"".join(_body_pieces(connection, reader))))
                pending = b""
                for piece in _body_pieces(connection, reader):
                    *lines, pending = (pending + piece).split(b"\n")
                    for line in lines:
                        if line.strip():
                            on_message(json.loads(line))
                if pending.strip():
                    on_message(json.loads(pending))
            except (OSError, ValueError) as exc:
                if cancelled.is_set():
                    raise _cancelled(what) from exc
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    raise deadline_exceeded(f"{what}: {timed_out}") from exc
                if isinstance(exc, (OSError, ProtocolError)):  # ProtocolError: the answer was cut off
                    raise unavailable(f"{what}: connection to Docker lost: {exc}") from exc
                raise CRIError(grpc.StatusCode.INTERNAL, f"{what}: unreadable answer from Docker: {exc}") from exc
            finally:
                connection.close()
            if cancelled.is_set():
                raise _cancelled(what)

    # --- containers -----------------------------------------------------------------------------

    @_measured
    def create_container(self, name: str, body: dict[str, Any]) -> str:
        """Create from Docker's own create body (Config fields with a HostConfig); the new ID."""
        created = self._request(f"create container {name}", "POST", "/containers/create", query={"name": name},
                                body=body, idempotent=False)
        for warning in created.get("Warnings") or []:
            log.warning("creating container %s: Docker warns: %s", name, warning)
        return created["Id"]

    def create_container_replacing(
        self, name: str, body: dict[str, Any], what: str, on_replaced: Callable[[str], None]
    ) -> str:
        """Create under `name`, recovering from a name conflict as dockershim did.

        The names are how CRI creates stay idempotent, so a holder of the name that is not running
        (a lost earlier attempt) is removed, `on_replaced` told, and the create tried again; when
        Docker cannot find the holder any more, the name gets a random suffix instead. A running
        holder is never removed: ALREADY_EXISTS.
        """
        try:
            return self.create_container(name, body)
        except CRIError as exc:
            holder = conflicting_container(exc)
            if holder is None:
                raise
        log.info("%s name %s is taken by container %s: removing it", what, name, holder[:12])
        try:
            self.remove_container(holder, force=False)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise CRIError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{what} {name} already exists as container {holder} and cannot be replaced: {exc.message}; "
                    f"stop and remove it first",
                ) from exc
            name = naming.randomized(name)
            log.info("conflicting container %s is gone; creating the %s as %s", holder[:12], what, name)
        else:
            on_replaced(holder)
        return self.create_container(name, body)

    @_measured
    def start_container(self, container_id: str) -> None:
        """Start; one already running is left as it is (Docker answers 304). Docker's 500 here is
        the runtime refusing the container as it was made (a user, device or mount runc cannot
        find or make, a sysctl it cannot set, a host port in use), and its 400 a command that is
        not in the image: FAILED_PRECONDITION, since the start request itself was fine."""
        try:
            self._request(f"start container {container_id}", "POST", f"/containers/{_quoted(container_id)}/start",
                          idempotent=False)
        except DockerStatusError as exc:
            if exc.status == 400:
                raise failed_precondition(exc.message.replace("rejected by Docker: ", "", 1)) from exc
            if exc.status != 500:
                raise
            if any(words in exc.message for words in _DOCKER_SIDE_DEADLINE):
                raise deadline_exceeded(exc.message) from exc
            if any(words in exc.message for words in _DOCKER_SIDE_UNAVAILABLE):
                raise unavailable(exc.message) from exc
            raise failed_precondition(exc.message) from exc

    @_measured
    def stop_container(self, container_id: str, grace_seconds: int) -> None:
        """SIGTERM, then SIGKILL after `grace_seconds`; a stopped container is left as it is."""
        self._request(f"stop container {container_id}", "POST", f"/containers/{_quoted(container_id)}/stop",
                      query={"t": grace_seconds}, timeout=self._timeout + grace_seconds, idempotent=False)

    @_measured
    def remove_container(self, container_id: str, force: bool = True) -> None:
        """Remove with its anonymous volumes; `force` kills it first if it runs."""
        self._request(f"remove container {container_id}", "DELETE", f"/containers/{_quoted(container_id)}",
                      query={"v": 1, "force": int(force)}, idempotent=False)

    @_measured
    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return self._request(f"container {container_id}", "GET", f"/containers/{_quoted(container_id)}/json",
                             idempotent=True)

    @_measured
    def list_containers(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Every container, running or not, that matches Docker's list `filters`."""
        query: dict[str, Any] = {"all": 1}
        if filters:
            query["filters"] = docker.utils.convert_filters(filters)
        return self._request("list containers", "GET", "/containers/json", query=query, idempotent=True)

    def full_id(self, prefix: str, label: str, kind: str) -> str:
        """The ID of the one container with `label` (`key=value`) whose ID starts with `prefix`
        (crictl's prefixes): Docker's own prefix rule also counts containers of other kinds, such
        as a pause container sharing a container's prefix ("multiple IDs found"). `prefix` itself
        when it is a whole ID or matches none of that kind (Docker then answers for it); NOT_FOUND
        for what is no ID at all (Docker would take a name, or clean `../` out of the path)."""
        if not _HEX_ID.fullmatch(prefix):
            raise not_found(f"{kind} {prefix[:200]!r} not found: an ID is 1 to 64 lower-case hex digits")
        if len(prefix) == 64:
            return prefix
        listed = self.list_containers({"label": [label], "id": [prefix]})
        candidates = sorted({entry["Id"] for entry in listed if entry["Id"].startswith(prefix)})
        if len(candidates) > 1:
            shown = ", ".join(candidate[:12] for candidate in candidates)
            raise invalid_argument(f"{kind} id prefix {prefix!r} is ambiguous: it matches {shown}")
        return candidates[0] if candidates else prefix

    # --- containers in sandboxes: exec, update, export ------------------------------------------

    @property
    def api_version(self) -> str:
        """The Engine API version spoken (negotiated on the first request)."""
        with self._call("negotiate the Docker API version"):
            self._clients()
        return self._api_version

    @_measured
    def create_exec(self, container_id: str, cmd: list[str], *, stdin: bool = False, stdout: bool = True,
                    stderr: bool = True, tty: bool = False) -> str:
        """An exec of `cmd` with the given streams attached (stdout and stderr by default), not yet started; its ID."""
        created = self._write(
            f"exec in container {container_id}",
            lambda api: api.exec_create(container_id, cmd, stdout=stdout, stderr=stderr, stdin=stdin, tty=tty),
        )
        return created["Id"]

    @_measured
    def inspect_exec(self, exec_id: str) -> dict[str, Any]:
        return self._read(f"exec {exec_id}", lambda api: api.exec_inspect(exec_id))

    @_measured
    def start_exec(self, exec_id: str, timeout: float, *, tty: bool = False) -> RawStream:
        """Start an exec attached; its output (multiplexed unless `tty`) on a connection of our own.

        docker-py cannot put a deadline on reading an attached exec, so the caller reads the
        stream with its own timeouts and closes it when done (or when it gives up).
        """
        request = json.dumps({"Detach": False, "Tty": tty}).encode()
        return self._hijack(f"start exec {exec_id}", f"/exec/{exec_id}/start", request, timeout)

    def _hijack(self, what: str, path: str, request: bytes, timeout: float) -> RawStream:
        """POST `path` asking Docker to hand the connection over to the process's stdio."""
        with self._call(what):
            self._clients()
        headers = {"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"}
        stream = RawStream(self._raw_socket(timeout))
        try:
            stream.sock.sendall(request_bytes("POST", f"/v{self._api_version}{path}", request, headers))
            status, body = stream.read_response_head(timeout)
        except (socket.timeout, TimeoutError) as exc:
            stream.close()
            raise deadline_exceeded(f"{what}: Docker did not answer in {timeout:g}s") from exc
        except OSError as exc:
            stream.close()
            raise unavailable(f"{what}: connection to Docker lost: {exc}") from exc
        if status not in (101, 200):  # 409: the container stopped (or was paused) since the exec was created
            stream.close()
            raise status_error(what, status, _message(body))
        return stream

    @_measured
    def update_container(self, container_id: str, resources: dict[str, Any]) -> None:
        """Change a running container's resources, given as Docker's update body (CpuShares, Memory, ...)."""
        arguments = {_UPDATE_ARGUMENTS[key]: value for key, value in resources.items()}
        updated = self._write(
            f"update container {container_id}", lambda api: api.update_container(container_id, **arguments)
        )
        for warning in (updated or {}).get("Warnings") or []:
            log.warning("updating container %s: Docker warns: %s", container_id, warning)

    # --- streaming: interactive exec, attach, terminal sizes ------------------------------------

    @_measured
    def resize_exec(self, exec_id: str, height: int, width: int) -> None:
        """Set the terminal size of a running exec's TTY."""
        self._write(f"resize exec {exec_id}", lambda api: api.exec_resize(exec_id, height=height, width=width))

    @_measured
    def attach_container(self, container_id: str, *, stdin: bool, stdout: bool, stderr: bool,
                         timeout: float) -> RawStream:
        """Join a running container's stdio from now on (no logs); multiplexed unless it has a TTY."""
        query = urllib.parse.urlencode({"stream": 1, "stdin": int(stdin), "stdout": int(stdout),
                                        "stderr": int(stderr)})
        return self._hijack(f"attach to container {container_id}", f"/containers/{container_id}/attach?{query}",
                            b"", timeout)

    @_measured
    def resize_container(self, container_id: str, height: int, width: int) -> None:
        """Set the terminal size of a container's TTY."""
        self._write(f"resize container {container_id}",
                    lambda api: api.resize(container_id, height=height, width=width))

    @_measured
    def read_container_file(self, container_id: str, path: str, limit: int) -> bytes | None:
        """A regular file of a container's filesystem, a symlink followed as the container sees it;
        None when there is none. One over `limit` bytes is FAILED_PRECONDITION, left unread."""
        target = path
        for _ in range(2):  # Docker resolves a symlink's target in full: one more request reads it
            status, stat, archive = self._archive(container_id, target, limit + TAR_OVERHEAD_BYTES)
            what = f"read {target} in container {container_id}"
            if status == 404 and b"no such container" not in archive.lower():
                return None
            if status != 200:
                raise status_error(what, status, _message(archive))
            if int(stat.get("size") or 0) > limit or len(archive) > limit + TAR_OVERHEAD_BYTES:
                raise failed_precondition(f"{what}: the file is over {limit} bytes")
            if not stat.get("linkTarget") or stat["linkTarget"] == target:
                return _file_of_archive(archive)
            target = stat["linkTarget"]
        return None  # a link to a link: Docker resolved it in full, so this is a loop

    def _archive(self, container_id: str, path: str, limit: int) -> tuple[int, dict[str, Any], bytes]:
        """Docker's archive answer for `path`: the status, the path's stat, and at most `limit`
        (plus one) bytes of the body, on a connection of our own that is closed after it."""
        what = f"read {path} in container {container_id}"
        connection = self._own_connection(what)
        reader = ResponseReader()
        with self._export_errors(what, connection, close=True):
            query = urllib.parse.urlencode({"path": path})
            connection.sendall(request_bytes("GET", f"/v{self._api_version}/containers/{_quoted(container_id)}"
                                                    f"/archive?{query}"))
            head = _read_head(connection, reader)
            body = bytearray()
            for piece in _body_pieces(connection, reader):
                body += piece
                if len(body) > limit:
                    break
        try:
            stat = json.loads(base64.b64decode(head.headers.get("x-docker-container-path-stat", "")) or b"{}")
        except ValueError:
            stat = {}
        return head.status, stat if isinstance(stat, dict) else {}, bytes(body)

    @_measured
    def export_container(self, container_id: str) -> Iterator[bytes]:
        """The container's filesystem as a tar stream, on a connection of our own.

        docker-py's export waits for ever on a dockerd that stops sending: here every read waits at
        most the request timeout (DEADLINE_EXCEEDED), and a stream cut short is UNAVAILABLE.
        """
        what = f"export container {container_id}"
        connection = self._own_connection(what)
        reader = ResponseReader()
        with self._export_errors(what, connection, close=False):
            connection.sendall(request_bytes("GET", f"/v{self._api_version}/containers/{container_id}/export"))
            head = _read_head(connection, reader)
            if head.status != 200:
                raise status_error(what, head.status, _message(b"".join(_body_pieces(connection, reader))))
        return self._export_body(what, connection, reader)

    def _export_body(self, what: str, connection: socket.socket, reader: ResponseReader) -> Iterator[bytes]:
        with self._export_errors(what, connection, close=True):
            yield from _body_pieces(connection, reader)

    @contextlib.contextmanager
    def _export_errors(self, what: str, connection: socket.socket, close: bool) -> Iterator[None]:
        """Every failure of an export as a CRIError, the connection closed after one (or at the end)."""
        try:
            yield
        except (socket.timeout, TimeoutError) as exc:
            connection.close()
            raise deadline_exceeded(f"{what}: Docker sent nothing for {self._timeout:g}s") from exc
        except (OSError, ProtocolError) as exc:
            connection.close()
            raise unavailable(f"{what}: connection to Docker lost: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        if close:
            connection.close()

    def _open_socket(self, timeout: float | None) -> socket.socket:
        """A connection of our own to dockerd; OSError when it cannot be made."""
        if self.endpoint.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.endpoint[len("unix://"):]
        else:
            host, _, port = self.endpoint.split("://", 1)[-1].rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            address = (host.strip("[]"), int(port))
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def _own_connection(self, what: str) -> socket.socket:
        """A connection of our own for `what`, the API version negotiated first; errors as CRIError."""
        with self._call(what):
            self._clients()
            return self._raw_socket(self._timeout)

    def _raw_socket(self, timeout: float | None) -> socket.socket:
        """A connection of our own, for requests that must be abortable or that Docker hijacks."""
        try:
            return self._open_socket(timeout)
        except OSError as exc:
            raise unavailable(f"cannot reach the Docker daemon at {self.endpoint}: {exc}") from exc


class RawStream:
    """A connection Docker hijacked for an attached stream; closing it ends the request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = b""

    def read_response_head(self, timeout: float) -> tuple[int, bytes]:
        """The HTTP status, and for an error the body Docker sent with it."""
        self.sock.settimeout(timeout)
        reader = ResponseReader()
        try:
            head = _read_head(self.sock, reader)
            if head.status in (101, 200):  # what follows is the process's stream, not an HTTP body
                self._pending = reader.leftover()
                return head.status, b""
            body = bytearray()  # an error's words; the caller closes the connection after them
            for piece in _body_pieces(self.sock, reader):
                body += piece
                if len(body) >= MAX_HEAD_BYTES:
                    break
            return head.status, bytes(body[:MAX_HEAD_BYTES])
        except ProtocolError as exc:
            raise OSError(f"unreadable answer from Docker: {exc}") from exc

    def take_buffered(self) -> bytes:
        """What arrived with the response head, for callers that read `sock` themselves."""
        data, self._pending = self._pending, b""
        return data

    def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to `size` bytes, b"" at the end; socket.timeout when nothing came in `timeout` seconds."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        self.sock.settimeout(timeout)
        return self.sock.recv(size)

    def interrupt(self) -> None:
        """End a recv() another thread waits in (it returns b""); the connection is closed by its reader."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.interrupt()
        self.sock.close()


def _file_of_archive(archive: bytes) -> bytes | None:
    """The one regular file in a tar answer of Docker's archive API; None for anything else."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None and member.isreg() else None
            return extracted.read() if extracted is not None else None
    except tarfile.TarError:
        return None


def _read_head(sock: socket.socket, reader: ResponseReader) -> Head:
    while True:
        event = reader.next_event()
        if isinstance(event, Head):
            return event
        reader.feed(sock.recv(RECEIVE_BYTES))  # NEED_DATA: a response begins with its head


def _body_pieces(sock: socket.socket, reader: ResponseReader) -> Iterator[bytes]:
    while (event := reader.next_event()) is not END:
        if event is NEED_DATA:
            reader.feed(sock.recv(RECEIVE_BYTES))
        elif isinstance(event, bytes):
            yield event


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _message(body: bytes) -> str:
    """What Docker said in an error answer: its JSON `message`, else the body as text."""
    try:
        return str(json.loads(body).get("message") or body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()


def _readable(sock: socket.socket) -> bool:
    """Whether data or an end of stream waits on `sock`, now; poll, as select fails on descriptors past 1023."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


_HEX_ID = re.compile(r"[0-9a-f]{1,64}")
# Docker's 500 on a start that is its own fault (containerd or a shim not answering), not the container's.
_DOCKER_SIDE_DEADLINE = ("context deadline exceeded",)
_DOCKER_SIDE_UNAVAILABLE = ("connection refused", "transport is closing", "error while dialing",
                            "containerd is not running")
# Docker redirects a path it cleaned (an ID holding `../`), with no body: not the object asked for.
_REDIRECTS = frozenset({301, 302, 307, 308})


def _quoted(name: str) -> str:
    """A container ID or name as one URL path segment."""
    return urllib.parse.quote(name, safe="")


def _events_path(followed: tuple[tuple[str, ...], tuple[str, ...]] | None, since: float | None,
                 until: float | None = None) -> str:
    """/events for the events of these (types, actions) (None: all events); without `until` it streams on."""
    parameters = {}
    if followed is not None:
        types, actions = followed
        parameters["filters"] = json.dumps({"type": list(types), "event": list(actions)})
    if since is not None:
        parameters["since"] = f"{since:.9f}"
    if until is not None:
        parameters["until"] = f"{until:.9f}"
    return f"/events?{urllib.parse.urlencode(parameters)}"


_NAME_CONFLICT = re.compile(r'is already in use by container "?([0-9a-f]{12,64})"?')


def conflicting_container(error: CRIError) -> str | None:
    """The container holding a name Docker refused to give again, from its conflict message."""
    match = _NAME_CONFLICT.search(error.message)
    return match.group(1) if match else None


def _cancelled(what: str) -> CRIError:
    return CRIError(grpc.StatusCode.CANCELLED, f"{what}: cancelled: the caller went away or its deadline passed")
