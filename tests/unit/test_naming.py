"""Docker names of sandboxes and containers: exactly dockershim's format, both ways."""

from __future__ import annotations

import re

import grpc
import pytest

from dockershim_py import naming
from dockershim_py.errors import CRIError


def test_sandbox_name_is_dockershims() -> None:
    assert naming.sandbox_name("nginx", "default", "0d1e-42", 3) == "k8s_POD_nginx_default_0d1e-42_3"


def test_container_name_is_dockershims() -> None:
    name = naming.container_name("web", "nginx", "default", "0d1e-42", 0)
    assert name == "k8s_web_nginx_default_0d1e-42_0"


@pytest.mark.parametrize("docker_name", ["k8s_POD_nginx_default_0d1e-42_3", "/k8s_POD_nginx_default_0d1e-42_3"])
def test_parse_sandbox_name_with_and_without_docker_slash(docker_name: str) -> None:
    assert naming.parse_sandbox_name(docker_name) == naming.SandboxName("nginx", "default", "0d1e-42", 3)


def test_parse_sandbox_name_tolerates_random_suffix() -> None:
    parsed = naming.parse_sandbox_name("/k8s_POD_nginx_default_0d1e-42_3_1a2b3c4d")
    assert parsed == naming.SandboxName("nginx", "default", "0d1e-42", 3)


def test_parse_container_name() -> None:
    parsed = naming.parse_container_name("/k8s_web_nginx_kube-system_uid-1_7_deadbeef")
    assert parsed == naming.ContainerName("web", "nginx", "kube-system", "uid-1", 7)


@pytest.mark.parametrize(
    "docker_name",
    [
        "k8s_POD_nginx_default_uid",  # 5 parts
        "k8s_POD_a_b_c_1_2_3",  # 8 parts
        "kube_POD_nginx_default_uid_1",  # wrong prefix
        "k8s_web_nginx_default_uid_1",  # not POD
        "k8s_POD_nginx_default_uid_x",  # attempt not a number
        "k8s_POD_nginx_default_uid_-1",
        "k8s_POD_nginx_default_uid_4294967296",  # over uint32
        "my-own-container",
    ],
)
def test_parse_sandbox_name_rejects_foreign_names(docker_name: str) -> None:
    with pytest.raises(ValueError):
        naming.parse_sandbox_name(docker_name)


def test_round_trip() -> None:
    name = naming.sandbox_name("p", "ns", "u", 4294967295)
    assert naming.parse_sandbox_name(naming.randomized(name)) == naming.SandboxName("p", "ns", "u", 4294967295)


def test_randomized_adds_eight_hex_digits() -> None:
    name = naming.randomized("k8s_POD_p_ns_u_0")
    assert re.fullmatch(r"k8s_POD_p_ns_u_0_[0-9a-f]{8}", name)
    assert len({naming.randomized("x") for _ in range(20)}) > 1


@pytest.mark.parametrize(
    "fields", [("", "ns", "u"), ("p", "", "u"), ("p", "ns", ""), ("my_pod", "ns", "u"), ("p", "a/b", "u")]
)
def test_sandbox_name_refuses_unparseable_parts(fields: tuple[str, str, str]) -> None:
    with pytest.raises(CRIError) as caught:
        naming.sandbox_name(*fields, 0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_container_name_refuses_underscore() -> None:
    with pytest.raises(CRIError):
        naming.container_name("my_container", "p", "ns", "u", 0)


def test_a_name_is_reserved_for_one_call_at_a_time() -> None:
    reservations = naming.NameReservations()
    with reservations.reserved("k8s_POD_web_shop_uid_0", "RunPodSandbox"):
        with pytest.raises(CRIError) as refused:
            with reservations.reserved("k8s_POD_web_shop_uid_0", "RunPodSandbox"):
                pass
        assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS and "under way" in refused.value.message
        with reservations.reserved("k8s_POD_web_shop_uid_1", "RunPodSandbox"):  # another attempt: free
            pass
    with pytest.raises(ValueError):  # a failed call gives the name back too
        with reservations.reserved("k8s_POD_web_shop_uid_0", "RunPodSandbox"):
            raise ValueError
    with reservations.reserved("k8s_POD_web_shop_uid_0", "RunPodSandbox"):
        pass


def test_a_part_longer_than_any_kubernetes_name_is_refused_not_sent_to_docker() -> None:
    """A 2 MB pod name made Docker drop the connection: UNAVAILABLE, asking the caller to retry."""
    assert naming.sandbox_name("p" * 253, "ns", "uid", 0)
    with pytest.raises(CRIError) as refused:
        naming.sandbox_name("p" * 2_000_000, "ns", "uid", 0)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "2000000 characters long" in refused.value.message and len(refused.value.message) < 200


@pytest.mark.parametrize("pod", [("we_b", "ns", "uid"), ("web", "n/s", "uid"), ("web", "ns", ""), ("w" * 254, "ns", "u")])
def test_a_container_name_refuses_pod_parts_that_would_not_parse_back(pod: tuple[str, str, str]) -> None:
    with pytest.raises(CRIError):
        naming.container_name("app", *pod, 0)
    naming.container_name("app", "w" * 253, "ns", "u", 0)


def test_unrandomized_gives_back_the_name_asked_for() -> None:
    name = "k8s_POD_p_ns_u_0"
    assert naming.unrandomized("/" + naming.randomized(name)) == name
    assert naming.unrandomized("/" + name) == name
    assert naming.unrandomized("") == ""
