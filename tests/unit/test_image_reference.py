import grpc
import pytest

from dockershim_py import image_reference
from dockershim_py.errors import CRIError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        # Docker rewrites only index.docker.io: an image pulled by this name is stored under it.
        ("registry-1.docker.io/library/busybox:1", "registry-1.docker.io/library/busybox:1"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("127.0.0.1:5000/dspy/busybox:1.0", "127.0.0.1:5000/dspy/busybox:1.0"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag"),
        ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
        ("quay.io/a_b/c-d__e.f:1.0-rc.1", "quay.io/a_b/c-d__e.f:1.0-rc.1"),
        ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
        ("repo:tag@sha256:" + "b" * 64, "docker.io/library/repo:tag@sha256:" + "b" * 64),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert image_reference.normalize(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        (" busybox", "whitespace"),
        ("Busybox", "lowercase"),
        ("bad ref", "malformed repository"),
        ("busybox:", "malformed tag"),
        ("busybox:tag with space", "malformed tag"),
        ("busybox@sha256:short", "malformed digest"),
        ("busybox@", "malformed digest"),
        (":tag", "no repository"),
        ("a//b", "malformed repository"),
        ("registry-.example.com/app", "malformed registry"),
        ("x" * 300, "longer than"),
    ],
)
def test_malformed_references_are_invalid_argument(text: str, reason: str) -> None:
    with pytest.raises(CRIError) as caught:
        image_reference.parse(text)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in caught.value.message


def test_parts_of_a_reference() -> None:
    ref = image_reference.parse("127.0.0.1:5000/dspy/busybox@sha256:" + "c" * 64)
    assert ref.registry == "127.0.0.1:5000"
    assert ref.repository == "127.0.0.1:5000/dspy/busybox"
    assert ref.tag == "" and ref.digest == "sha256:" + "c" * 64


def test_image_ids() -> None:
    assert image_reference.is_image_id("sha256:" + "0" * 64)
    assert image_reference.is_image_id("f" * 64)
    assert not image_reference.is_image_id("sha256:" + "0" * 12)
    assert not image_reference.is_image_id("busybox")
