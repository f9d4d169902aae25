"""Docker container names of pod sandboxes and containers, as dockershim and cri-dockerd write them.

The name is what makes RunPodSandbox and CreateContainer idempotent: Docker refuses a second
container with the same name. It is also where ListPodSandbox/ListContainers read the CRI
metadata back from, so the format must stay exactly dockershim's for nodes that switch over:

    k8s_POD_<pod>_<namespace>_<uid>_<attempt>[_<random>]
    k8s_<container>_<pod>_<namespace>_<uid>_<attempt>[_<random>]

The optional 7th part is the random suffix added after a name conflict could not be resolved
by removing the conflicting container.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from .errors import CRIError, invalid_argument

KUBE_PREFIX = "k8s"
SANDBOX_CONTAINER_NAME = "POD"
DELIMITER = "_"
# The longest Kubernetes name (a DNS subdomain); namespaces, container names and UIDs are shorter.
MAX_PART_LENGTH = 253


@dataclass(frozen=True)
class SandboxName:
    name: str
    namespace: str
    uid: str
    attempt: int


@dataclass(frozen=True)
class ContainerName:
    name: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    attempt: int


def _check_part(what: str, value: str) -> None:
    if not value:
        raise invalid_argument(f"{what} is empty")
    if len(value) > MAX_PART_LENGTH:  # Docker would drop the connection over a name of megabytes
        raise invalid_argument(f"{what} {value[:40]!r}... is {len(value)} characters long: Kubernetes names "
                               f"are at most {MAX_PART_LENGTH}")
    if DELIMITER in value or "/" in value:
        raise invalid_argument(f"{what} {value!r} must not contain '_' or '/' (it is part of the Docker name)")


def sandbox_name(name: str, namespace: str, uid: str, attempt: int) -> str:
    """The pause container's name; refuses parts that would make it unparseable."""
    _check_part("pod sandbox metadata.name", name)
    _check_part("pod sandbox metadata.namespace", namespace)
    _check_part("pod sandbox metadata.uid", uid)
    return DELIMITER.join((KUBE_PREFIX, SANDBOX_CONTAINER_NAME, name, namespace, uid, str(attempt)))


def container_name(container: str, pod_name: str, pod_namespace: str, pod_uid: str, attempt: int) -> str:
    """An application container's name inside the sandbox of pod `pod_name`."""
    _check_part("container metadata.name", container)
    _check_part("pod sandbox metadata.name", pod_name)
    _check_part("pod sandbox metadata.namespace", pod_namespace)
    _check_part("pod sandbox metadata.uid", pod_uid)
    return DELIMITER.join((KUBE_PREFIX, container, pod_name, pod_namespace, pod_uid, str(attempt)))


def randomized(name: str) -> str:
    """`name` with the 8-hex-digit suffix dockershim adds after an unresolvable name conflict."""
    return f"{name}{DELIMITER}{secrets.randbits(32):08x}"


def unrandomized(docker_name: str) -> str:
    """The name that was asked for, from a Docker name that may carry `randomized`'s suffix."""
    return DELIMITER.join(docker_name.removeprefix("/").split(DELIMITER)[:6])


def _split(docker_name: str, kind: str) -> list[str]:
    parts = docker_name.removeprefix("/").split(DELIMITER)
    if len(parts) not in (6, 7):
        raise ValueError(f"{kind} name {docker_name!r} has {len(parts)} '_'-separated parts, not 6 or 7")
    if parts[0] != KUBE_PREFIX:
        raise ValueError(f"{kind} name {docker_name!r} does not start with {KUBE_PREFIX!r}")
    return parts


def _attempt(docker_name: str, text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise ValueError(f"name {docker_name!r}: attempt {text!r} is not a 32-bit unsigned number")
    return int(text)


def parse_sandbox_name(docker_name: str) -> SandboxName:
    """The pod metadata in a sandbox's Docker name (Docker's leading '/' is accepted).

    Raises ValueError for names this shim (or dockershim) did not write.
    """
    parts = _split(docker_name, "sandbox")
    if parts[1] != SANDBOX_CONTAINER_NAME:
        raise ValueError(f"sandbox name {docker_name!r}: second part is {parts[1]!r}, not {SANDBOX_CONTAINER_NAME!r}")
    return SandboxName(name=parts[2], namespace=parts[3], uid=parts[4], attempt=_attempt(docker_name, parts[5]))


def parse_container_name(docker_name: str) -> ContainerName:
    """The container and pod metadata in a container's Docker name; ValueError when foreign."""
    parts = _split(docker_name, "container")
    return ContainerName(
        name=parts[1],
        pod_name=parts[2],
        pod_namespace=parts[3],
        pod_uid=parts[4],
        attempt=_attempt(docker_name, parts[5]),
    )


class NameReservations:
    """The names this process's calls are making containers under, as containerd reserves them.

    Docker's own check is not enough: while one create is under way a second one's conflict names a
    container not there yet, and the second got a random suffix, so a retried RunPodSandbox (the
    kubelet's, after its deadline) made a second READY sandbox of the pod.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()

    @contextlib.contextmanager
    def reserved(self, name: str, call: str) -> Iterator[None]:
        with self._lock:
            if name in self._names:
                raise CRIError(grpc.StatusCode.ALREADY_EXISTS,
                               f"{call} of {name} is under way in another call; try again once it has returned")
            self._names.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._names.discard(name)
