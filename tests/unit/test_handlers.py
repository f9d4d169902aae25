"""Every CRI RPC is either implemented or answers UNIMPLEMENTED with a reason: no silent gaps."""

import pytest

from dockershim_py.api import api_pb2
from dockershim_py.cri.image_service import ImageServiceAdapter
from dockershim_py.cri.runtime_service import RuntimeServiceAdapter


@pytest.mark.parametrize("adapter", [RuntimeServiceAdapter, ImageServiceAdapter])
def test_every_rpc_is_implemented_or_explained(adapter: type) -> None:
    methods = {m.name for m in api_pb2.DESCRIPTOR.services_by_name[adapter.SERVICE].methods}
    implemented = {name for name in methods if callable(getattr(adapter, name, None))}
    explained = set(adapter.UNIMPLEMENTED)
    assert implemented | explained == methods
    assert not implemented & explained, "an implemented RPC is still listed as unimplemented"
    assert explained <= methods, "UNIMPLEMENTED names an RPC the API does not have"
    assert all(reason.strip() for reason in adapter.UNIMPLEMENTED.values())


def test_a_list_of_the_same_messages_reuses_its_response() -> None:
    from dockershim_py.cri.runtime_service import RepeatedList

    made = []
    lists = RepeatedList(lambda items: made.append(list(items)) or api_pb2.ListContainersResponse(containers=items))
    first, second = api_pb2.Container(id="a"), api_pb2.Container(id="b")
    response = lists.response([first, second])
    assert lists.response([first, second]) is response and len(made) == 1
    assert [c.id for c in lists.response([first]).containers] == ["a"]  # one gone
    equal_but_new = api_pb2.Container(id="a")  # converted again: the container changed
    assert lists.response([equal_but_new]) is not response and len(made) == 3
    assert lists.response([]).containers == [] and len(made) == 4
