"""The streaming lists' batches: every item once, in order, each message within its budget."""

import pytest

from dockershim_py.api import api_pb2 as api
from dockershim_py.cri.list_streams import batches


def containers(sizes: list[int]) -> list[api.Container]:
    """Containers whose encoded size grows with `sizes` (an annotation of that many bytes)."""
    return [api.Container(id=f"c{index:04d}", annotations={"pad": "x" * size}) for index, size in enumerate(sizes)]


def test_no_items_make_no_messages() -> None:
    assert list(batches([])) == []


def test_a_small_list_is_one_message_of_the_same_items() -> None:
    items = containers([100] * 220)
    [only] = list(batches(items))
    assert list(only) == items
    assert all(a is b for a, b in zip(only, items))


@pytest.mark.parametrize("sizes", [[300] * 50, [10, 2000, 10, 10, 900, 3000, 5], [999] * 7, [1] * 3])
def test_every_item_is_in_exactly_one_message_in_order_and_within_the_budget(sizes: list[int]) -> None:
    items, budget = containers(sizes), 2048
    made = list(batches(items, budget))
    assert [item.id for batch in made for item in batch] == [item.id for item in items]
    for batch in made:
        assert batch, "a message holds at least one item"
        encoded = api.StreamContainersResponse(containers=batch).ByteSize()
        assert len(batch) == 1 or encoded <= budget, (len(batch), encoded)


def test_an_item_over_the_budget_goes_alone() -> None:
    items = containers([10, 5000, 10])
    assert [[item.id for item in batch] for batch in batches(items, 1024)] == [["c0000"], ["c0001"], ["c0002"]]


def test_messages_are_as_full_as_the_budget_allows() -> None:
    items = containers([100] * 100)
    size = api.StreamContainersResponse(containers=items[:1]).ByteSize()
    made = list(batches(items, size * 10))
    assert [len(batch) for batch in made] == [10] * 10


@pytest.mark.parametrize("size", [0, 1, 100, 126, 127, 128, 16_000, 16_383, 16_384, 3_000_000])
def test_a_message_is_exactly_the_sum_of_its_entries(size: int) -> None:
    """What the budget counts is what goes on the wire, so a full message is not cut one item short."""
    items = containers([size] * 3)
    [batch] = list(batches(items, 1 << 30))
    single = api.StreamContainersResponse(containers=items[:1]).ByteSize()
    assert api.StreamContainersResponse(containers=batch).ByteSize() == 3 * single
    assert list(batches(items, 3 * single)) == [items]
    assert [len(made) for made in batches(items, 3 * single - 1)] == [2, 1]


def test_a_110_pod_relist_is_one_message() -> None:
    """About 1.5 KB a container (the KEP's estimate): 220 of them fit the default budget."""
    assert len(list(batches(containers([1500] * 220)))) == 1
    assert len(list(batches(containers([1500] * 2000)))) > 1
