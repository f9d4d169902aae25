import grpc
import pytest

from dockershim_py.errors import CRIError
from dockershim_py.network import normalised_pod_cidr


def test_pod_cidr_ranges_are_trimmed_and_empty_parts_dropped() -> None:
    assert normalised_pod_cidr(" 10.244.1.0/24 , fd00:1::/64 ,") == "10.244.1.0/24,fd00:1::/64"
    assert normalised_pod_cidr("") == ""


@pytest.mark.parametrize("pod_cidr", ["10.244.1.7", "fd00::1", "10.244.1.0/24,10.244.2.1", "10.0.0.0/33", "pods"])
def test_pod_cidr_that_is_not_a_range_is_invalid(pod_cidr: str) -> None:
    with pytest.raises(CRIError) as refused:
        normalised_pod_cidr(pod_cidr)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
