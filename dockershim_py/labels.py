"""dockershim's label scheme: CRI labels and annotations stored as Docker labels, and back.

Docker has no annotations and its labels are immutable, so dockershim stored CRI annotations as
labels prefixed `annotation.`, next to a few internal labels that tell sandboxes from containers
and link a container to its sandbox. The scheme is kept exactly, so containers created by
dockershim or cri-dockerd are read back correctly; internal labels never reach CRI replies.
"""

from __future__ import annotations

import json
import re

from collections.abc import Mapping

ANNOTATION_PREFIX = "annotation."

CONTAINER_TYPE_LABEL = "io.kubernetes.docker.type"
CONTAINER_TYPE_SANDBOX = "podsandbox"
CONTAINER_TYPE_CONTAINER = "container"
SANDBOX_ID_LABEL = "io.kubernetes.sandbox.id"
CONTAINER_LOG_PATH_LABEL = "io.kubernetes.container.logpath"
# Set on sandboxes (value "POD") for the kubelet's summary API; hidden from CRI replies of sandboxes.
KUBERNETES_CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
# dockershim-py's own: the RuntimeClass handler a sandbox was created for (Docker's list call
# does not say which runtime a container uses, and ListPodSandbox must not inspect).
RUNTIME_HANDLER_LABEL = "io.kubernetes.dockershim-py.runtime-handler"

# dockershim-py's own: the image as the user wrote it in the pod spec (the kubelet shows it in
# the pod status, while the container is created from the image ID).
USER_SPECIFIED_IMAGE_LABEL = "io.kubernetes.dockershim-py.user-specified-image"

# dockershim-py's own: the keys of the image's labels, which Docker gives the container too, that
# the CRI did not ask for (a JSON list): left out of CRI replies, as containerd leaves them out.
IMAGE_LABEL_KEYS_LABEL = "io.kubernetes.dockershim-py.image-label-keys"

# dockershim-py's own: the PID namespace a sandbox was asked for (POD or CONTAINER), which the
# pause container's Docker modes cannot tell apart: its containers join its namespace or not.
PID_NAMESPACE_LABEL = "io.kubernetes.dockershim-py.pid-namespace"

# dockershim-py's own: the identity the container's first process starts with (`uid:gid:groups`),
# worked out at create from the image's accounts as runc works it out: ContainerStatus.user must
# not change when the process switches user or exits.
INITIAL_USER_LABEL = "io.kubernetes.dockershim-py.initial-user"

# dockershim-py's own: set on a privileged container made of its parts where Docker's Privileged
# cannot run (every capability the node grants, unconfined, the node's devices), so that
# `crictl inspect` tells it privileged while Docker's own flag is false.
PRIVILEGED_IN_PARTS_LABEL = "io.kubernetes.dockershim-py.privileged-in-parts"

# Docker list filters for the two kinds of CRI object.
CONTAINERS_FILTER = f"{CONTAINER_TYPE_LABEL}={CONTAINER_TYPE_CONTAINER}"
SANDBOXES_FILTER = f"{CONTAINER_TYPE_LABEL}={CONTAINER_TYPE_SANDBOX}"

INTERNAL_LABELS = frozenset({
    CONTAINER_TYPE_LABEL, SANDBOX_ID_LABEL, CONTAINER_LOG_PATH_LABEL, RUNTIME_HANDLER_LABEL, USER_SPECIFIED_IMAGE_LABEL,
    IMAGE_LABEL_KEYS_LABEL, PID_NAMESPACE_LABEL, INITIAL_USER_LABEL, PRIVILEGED_IN_PARTS_LABEL,
})


def make_labels(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, str]:
    """CRI labels as they are, annotations under the `annotation.` prefix.

    A caller's label with an internal label's key is left out: the shim sets those, and one it
    does not set (a container's log path when it has none) must not be the caller's to choose.
    """
    merged = {key: value for key, value in labels.items() if key not in INTERNAL_LABELS}
    for key, value in annotations.items():
        merged[ANNOTATION_PREFIX + key] = value
    return merged


# Docker gives a container its image's labels beneath its own. Every internal label is therefore
# set at create, empty where it does not apply (read back as absent): an image must not choose a
# container's log file or sandbox.


def sandbox_labels(labels: Mapping[str, str], annotations: Mapping[str, str], runtime_handler: str = "",
                   pid_namespace: str = "") -> dict[str, str]:
    """The Docker labels of a pause container."""
    merged = make_labels(labels, annotations)
    merged[CONTAINER_TYPE_LABEL] = CONTAINER_TYPE_SANDBOX
    merged[KUBERNETES_CONTAINER_NAME_LABEL] = "POD"
    merged[RUNTIME_HANDLER_LABEL] = runtime_handler
    merged[SANDBOX_ID_LABEL] = ""
    merged[CONTAINER_LOG_PATH_LABEL] = ""
    merged[USER_SPECIFIED_IMAGE_LABEL] = ""
    merged[PID_NAMESPACE_LABEL] = pid_namespace
    return merged


def container_labels(
    labels: Mapping[str, str], annotations: Mapping[str, str], sandbox_id: str, log_path: str = "",
    user_specified_image: str = "",
) -> dict[str, str]:
    """The Docker labels of an application container of sandbox `sandbox_id`."""
    merged = make_labels(labels, annotations)
    merged[CONTAINER_TYPE_LABEL] = CONTAINER_TYPE_CONTAINER
    merged[SANDBOX_ID_LABEL] = sandbox_id
    merged[CONTAINER_LOG_PATH_LABEL] = log_path
    merged[USER_SPECIFIED_IMAGE_LABEL] = user_specified_image
    merged[RUNTIME_HANDLER_LABEL] = ""
    merged[PID_NAMESPACE_LABEL] = ""
    return merged


def hide_image_labels(docker_labels: dict[str, str], image_labels: Mapping[str, str] | None) -> None:
    """Record in `docker_labels` (a create body's) which of the image's labels the CRI did not set."""
    keys = sorted(set(image_labels or {}) - set(docker_labels))
    docker_labels[IMAGE_LABEL_KEYS_LABEL] = json.dumps(keys, separators=(",", ":")) if keys else ""


def _image_label_keys(docker_labels: Mapping[str, str]) -> frozenset[str]:
    text = docker_labels.get(IMAGE_LABEL_KEYS_LABEL) or ""
    if not text:
        return frozenset()
    try:
        keys = json.loads(text)
    except ValueError:
        return frozenset()
    return frozenset(key for key in keys if isinstance(key, str)) if isinstance(keys, list) else frozenset()


def helper_labels(helper_label: str) -> dict[str, str]:
    """The labels of a helper container the shim makes from an image (never started): typed as
    no CRI object, whatever the image's labels say."""
    return {helper_label: "true", CONTAINER_TYPE_LABEL: ""}


def is_helper(docker_labels: Mapping[str, str] | None, helper_label: str) -> bool:
    """A helper container, not a pod's container whose image carries the helper's label."""
    docker_labels = docker_labels or {}
    return (docker_labels.get(helper_label) == "true"
            and docker_labels.get(CONTAINER_TYPE_LABEL) not in (CONTAINER_TYPE_SANDBOX, CONTAINER_TYPE_CONTAINER))


def extract_labels(docker_labels: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(CRI labels, CRI annotations) from a container's Docker labels, internal ones left out."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    docker_labels = docker_labels or {}
    is_sandbox = docker_labels.get(CONTAINER_TYPE_LABEL) == CONTAINER_TYPE_SANDBOX
    image_keys = _image_label_keys(docker_labels)
    for key, value in docker_labels.items():
        if key in INTERNAL_LABELS or key in image_keys:
            continue
        if is_sandbox and key == KUBERNETES_CONTAINER_NAME_LABEL:
            continue
        if key.startswith(ANNOTATION_PREFIX):
            annotations[key[len(ANNOTATION_PREFIX):]] = value
        else:
            labels[key] = value
    return labels, annotations


def is_sandbox(docker_labels: Mapping[str, str] | None) -> bool:
    return (docker_labels or {}).get(CONTAINER_TYPE_LABEL) == CONTAINER_TYPE_SANDBOX


def is_container(docker_labels: Mapping[str, str] | None) -> bool:
    return (docker_labels or {}).get(CONTAINER_TYPE_LABEL) == CONTAINER_TYPE_CONTAINER


def matches_selector(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """CRI label selectors are exact matches, all of which must hold."""
    return all(labels.get(key) == value for key, value in selector.items())


def docker_label_filters(selector: Mapping[str, str]) -> list[str]:
    """Docker `label=` filter values for a CRI selector, for the selector keys Docker can match.

    Keys that are internal or look like annotations are matched on the extracted labels only:
    Docker would match them against the wrong thing.
    """
    return [
        f"{key}={value}"
        for key, value in sorted(selector.items())
        if key not in INTERNAL_LABELS and not key.startswith(ANNOTATION_PREFIX)
    ]


_ID_PREFIX = re.compile(r"[0-9a-f]{1,64}")


def container_list_filters(
    container_id: str, sandbox_id: str, selector: Mapping[str, str]
) -> dict[str, list[str]] | None:
    """Docker's list filters for the CRI containers a ContainerFilter (or stats filter) names.

    None when an ID cannot be one (nothing matches, and it is not passed to Docker's filter).
    Docker matches `id` anywhere in the ID, so callers still apply the CRI prefix rule.
    """
    for value in (container_id, sandbox_id):
        if value and not _ID_PREFIX.fullmatch(value):
            return None
    filters: dict[str, list[str]] = {"label": [f"{CONTAINER_TYPE_LABEL}={CONTAINER_TYPE_CONTAINER}"]}
    if container_id:
        filters["id"] = [container_id]
    if len(sandbox_id) == 64:
        filters["label"].append(f"{SANDBOX_ID_LABEL}={sandbox_id}")
    filters["label"] += docker_label_filters(selector)
    return filters
