"""dockershim's label scheme, and the timestamps read from Docker."""

from __future__ import annotations

import pytest

from dockershim_py import labels
from dockershim_py.timestamps import parse_docker_time


def test_sandbox_labels_carry_labels_annotations_and_internal_marks() -> None:
    docker_labels = labels.sandbox_labels({"app": "web"}, {"kubernetes.io/config.seen": "now"})
    assert docker_labels == {
        "app": "web",
        "annotation.kubernetes.io/config.seen": "now",
        "io.kubernetes.docker.type": "podsandbox",
        "io.kubernetes.container.name": "POD",
        # empty, not absent: the image's labels are beneath a container's own
        "io.kubernetes.dockershim-py.runtime-handler": "",
        "io.kubernetes.sandbox.id": "",
        "io.kubernetes.container.logpath": "",
        "io.kubernetes.dockershim-py.user-specified-image": "",
        "io.kubernetes.dockershim-py.pid-namespace": "",
    }


def test_sandbox_labels_record_a_runtime_handler() -> None:
    docker_labels = labels.sandbox_labels({}, {}, runtime_handler="runc")
    assert docker_labels[labels.RUNTIME_HANDLER_LABEL] == "runc"


def test_container_labels() -> None:
    docker_labels = labels.container_labels({"a": "1"}, {"b": "2"}, "sandbox-id", "/var/log/pods/x/0.log")
    assert docker_labels == {
        "a": "1",
        "annotation.b": "2",
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.sandbox.id": "sandbox-id",
        "io.kubernetes.container.logpath": "/var/log/pods/x/0.log",
        "io.kubernetes.dockershim-py.user-specified-image": "",
        "io.kubernetes.dockershim-py.runtime-handler": "",
        "io.kubernetes.dockershim-py.pid-namespace": "",
    }


def test_internal_labels_do_not_override_the_type() -> None:
    docker_labels = labels.sandbox_labels({"io.kubernetes.docker.type": "container"}, {})
    assert docker_labels["io.kubernetes.docker.type"] == "podsandbox"


def test_a_callers_internal_labels_are_left_out() -> None:
    """A log path the caller names would have the shim (root) append the container's output to any file."""
    forged = {"io.kubernetes.container.logpath": "/etc/passwd", "io.kubernetes.sandbox.id": "other",
              "io.kubernetes.dockershim-py.runtime-handler": "runsc",
              "io.kubernetes.dockershim-py.user-specified-image": "forged", "app": "web"}
    empty = {"io.kubernetes.container.logpath": "", "io.kubernetes.dockershim-py.runtime-handler": "",
             "io.kubernetes.dockershim-py.user-specified-image": "", "io.kubernetes.dockershim-py.pid-namespace": ""}
    assert labels.container_labels(forged, {}, "sandbox-id") == {
        "app": "web", "io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "sandbox-id", **empty}
    assert labels.sandbox_labels(forged, {}) == {
        "app": "web", "io.kubernetes.docker.type": "podsandbox", "io.kubernetes.container.name": "POD",
        "io.kubernetes.sandbox.id": "", **empty}


def test_extract_round_trips_and_hides_internal_labels() -> None:
    cri_labels = {"app": "web", "io.kubernetes.pod.name": "web-0"}
    cri_annotations = {"kubernetes.io/config.source": "api", "empty": ""}
    for docker_labels in (
        labels.sandbox_labels(cri_labels, cri_annotations, runtime_handler="runc"),
        labels.container_labels(cri_labels, cri_annotations, "sid", "/log"),
    ):
        assert labels.extract_labels(docker_labels) == (cri_labels, cri_annotations)


def test_container_name_label_is_kept_on_containers() -> None:
    docker_labels = labels.container_labels({"io.kubernetes.container.name": "web"}, {}, "sid")
    assert labels.extract_labels(docker_labels)[0] == {"io.kubernetes.container.name": "web"}


def test_extract_labels_of_nothing() -> None:
    assert labels.extract_labels(None) == ({}, {})


def test_kinds() -> None:
    assert labels.is_sandbox(labels.sandbox_labels({}, {}))
    assert not labels.is_container(labels.sandbox_labels({}, {}))
    assert labels.is_container(labels.container_labels({}, {}, "s"))
    assert not labels.is_sandbox(None)


@pytest.mark.parametrize(
    "selector, expected",
    [({}, True), ({"app": "web"}, True), ({"app": "db"}, False), ({"app": "web", "tier": "x"}, False)],
)
def test_matches_selector(selector: dict[str, str], expected: bool) -> None:
    assert labels.matches_selector({"app": "web"}, selector) is expected


def test_docker_label_filters_skip_keys_docker_would_misread() -> None:
    selector = {"app": "web", "annotation.x": "1", "io.kubernetes.docker.type": "container", "b": "2"}
    assert labels.docker_label_filters(selector) == ["app=web", "b=2"]


@pytest.mark.parametrize(
    "text, nanos",
    [
        ("2024-05-01T10:20:30.123456789Z", 1714558830123456789),
        ("2024-05-01T10:20:30Z", 1714558830000000000),
        ("2024-05-01T12:20:30.5+02:00", 1714558830500000000),
        ("0001-01-01T00:00:00Z", 0),
        ("", 0),
        (None, 0),
        ("yesterday", 0),
    ],
)
def test_parse_docker_time(text: str | None, nanos: int) -> None:
    assert parse_docker_time(text) == nanos


def test_container_list_filters() -> None:
    assert labels.container_list_filters("", "", {}) == {"label": ["io.kubernetes.docker.type=container"]}
    sandbox = "b" * 64
    assert labels.container_list_filters("abc", sandbox, {"app": "web"}) == {
        "label": ["io.kubernetes.docker.type=container", f"io.kubernetes.sandbox.id={sandbox}", "app=web"],
        "id": ["abc"],
    }
    assert "io.kubernetes.sandbox.id" not in str(labels.container_list_filters("", "bbb", {}))  # a prefix: ours
    assert labels.container_list_filters("not-hex", "", {}) is None
    assert labels.container_list_filters("", "XYZ", {}) is None


def test_the_images_labels_the_cri_did_not_set_are_left_out_of_its_labels() -> None:
    body = labels.container_labels({"app": "web", "shared": "mine"}, {}, "sandbox-id")
    labels.hide_image_labels(body, {"shared": "image's", "vendor": "acme", "annotation.x": "y"})
    assert body[labels.IMAGE_LABEL_KEYS_LABEL] == '["annotation.x","vendor"]'
    on_the_container = {"vendor": "acme", "annotation.x": "y", **body}  # Docker's merge: the image's beneath
    assert labels.extract_labels(on_the_container) == ({"app": "web", "shared": "mine"}, {})
    labels.hide_image_labels(body, None)
    assert body[labels.IMAGE_LABEL_KEYS_LABEL] == ""


@pytest.mark.parametrize("recorded", ["", "not json", '{"vendor": 1}', '[1, null]'])
def test_a_container_without_a_readable_record_shows_every_label_as_dockershim_did(recorded: str) -> None:
    docker_labels = {"io.kubernetes.docker.type": "container", "vendor": "acme",
                     labels.IMAGE_LABEL_KEYS_LABEL: recorded}
    assert labels.extract_labels(docker_labels) == ({"vendor": "acme"}, {})


# Found by mutation testing: behaviour no test above pinned -----------------------------------


def test_a_helper_is_told_from_a_pod_container_whose_image_carries_the_label() -> None:
    """Recovery force-removes helpers: a pod's container must never be taken for one."""
    assert labels.is_helper(labels.helper_labels("x.helper"), "x.helper")
    assert not labels.is_helper({"x.helper": "true", labels.CONTAINER_TYPE_LABEL: "container"}, "x.helper")
    assert not labels.is_helper({"x.helper": "true", labels.CONTAINER_TYPE_LABEL: "podsandbox"}, "x.helper")
    assert not labels.is_helper({labels.CONTAINER_TYPE_LABEL: ""}, "x.helper")
    assert not labels.is_helper(None, "x.helper")


def test_the_label_names_kept_on_docker_containers_do_not_change() -> None:
    """Containers made by an earlier version carry them."""
    assert labels.IMAGE_LABEL_KEYS_LABEL == "io.kubernetes.dockershim-py.image-label-keys"
    assert labels.INITIAL_USER_LABEL == "io.kubernetes.dockershim-py.initial-user"
    assert labels.PID_NAMESPACE_LABEL == "io.kubernetes.dockershim-py.pid-namespace"
    assert labels.PRIVILEGED_IN_PARTS_LABEL == "io.kubernetes.dockershim-py.privileged-in-parts"
