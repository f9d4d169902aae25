"""Every CRI RPC is either implemented or answers UNIMPLEMENTED with a reason: no silent gaps."""

import pytest

from dockershim_py.api import api_pb2
from dockershim_py.cri.handlers import MAX_STATUS_MESSAGE, status_message
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


def test_a_response_handed_out_again_is_serialized_once() -> None:
    from dockershim_py.cri.handlers import LastSerialized, method_handlers

    serialized = []
    serialize = LastSerialized(lambda message: serialized.append(message) or message.SerializeToString())
    response = api_pb2.ListContainersResponse(containers=[api_pb2.Container(id="a")])
    data = serialize(response)
    assert serialize(response) is data and len(serialized) == 1
    equal_but_new = api_pb2.ListContainersResponse(containers=[api_pb2.Container(id="a")])
    assert serialize(equal_but_new) == data and len(serialized) == 2  # another object is serialized anew
    handlers = method_handlers(RuntimeServiceAdapter.__new__(RuntimeServiceAdapter), "v1")
    kept = {name for name, handler in handlers.items() if isinstance(handler.response_serializer, LastSerialized)}
    assert kept == RuntimeServiceAdapter.REPEATED_RESPONSES == {
        "ListPodSandbox", "ListContainers", "StreamPodSandboxes", "StreamContainers"}


def test_an_unchanged_stream_hands_out_the_same_messages() -> None:
    """A gated kubelet's relist: the same containers give the very same stream messages, serialized once."""
    from dockershim_py.cri.runtime_service import RepeatedList
    from dockershim_py.cri.list_streams import batches

    streams = RepeatedList(lambda items: [api_pb2.StreamContainersResponse(containers=b) for b in batches(items, 64)])
    items = [api_pb2.Container(id=f"c{index:02d}", annotations={"k": "v" * 20}) for index in range(6)]
    first = streams.response(items)
    assert len(first) > 1
    again = streams.response(list(items))
    assert len(again) == len(first) and all(a is b for a, b in zip(again, first))
    assert [c.id for m in streams.response(items[:2]) for c in m.containers] == ["c00", "c01"]


def test_the_long_methods_are_cri_methods() -> None:
    """Served by workers of their own: a misspelt name would quietly share the others' workers again."""
    from dockershim_py.cri.handlers import LONG_METHODS
    methods = {method.name for service in ("RuntimeService", "ImageService")
               for method in api_pb2.DESCRIPTOR.services_by_name[service].methods}
    assert LONG_METHODS <= methods


def test_a_status_message_is_cut_to_what_any_client_takes() -> None:
    assert status_message("short") == "short"
    cut = status_message("x" * (MAX_STATUS_MESSAGE + 10))
    assert cut == "x" * MAX_STATUS_MESSAGE + "... (10 more bytes)"
    for wide in ("é", "名", "😀"):  # 2, 3 and 4 bytes: counted as the client counts them
        cut = status_message(wide * 5000)
        assert len(cut.encode()) <= MAX_STATUS_MESSAGE + 30 and cut.startswith(wide) and "\ufffd" not in cut


def test_a_streaming_call_is_logged_as_a_unary_one_is(caplog: pytest.LogCaptureFixture) -> None:
    """GetContainerEvents and the Stream* lists left no line in the debug log."""
    from dockershim_py.cri.handlers import _streaming

    class Context:
        def abort(self, code, details):  # what _fail calls
            raise RuntimeError(details)

    handle = _streaming("/runtime.v1.RuntimeService/StreamContainers", lambda request, context: iter([1, 2]))
    with caplog.at_level("DEBUG", logger="dockershim_py.cri"):
        assert list(handle(None, Context())) == [1, 2]
    assert any("StreamContainers streamed for" in record.getMessage() and "(OK)" in record.getMessage()
               for record in caplog.records)
