"""The streaming lists of KEP-5825 (StreamPodSandboxes, StreamContainers, ...): a unary list's
items, cut into messages of bounded size.

A node with thousands of exited containers makes a ListContainers reply larger than the
kubelet's 16 MiB receive limit, and the whole call fails. Behind its CRIListStreaming gate the
kubelet asks for the same list as a stream instead and joins the messages. The list is taken
once, as the unary RPC takes it, so every item is in exactly one message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from google.protobuf.message import Message

# Far below every client's receive limit (gRPC's default 4 MiB, the kubelet's 16 MiB), and large
# enough that a 110-pod node's relist is one message, as the unary RPC's.
MESSAGE_BUDGET_BYTES = 1 << 20
# Every response holds its items in field 1, whose tag is one byte.
_TAG_BYTES = 1

Item = TypeVar("Item", bound=Message)


def batches(items: Sequence[Item], budget_bytes: int = MESSAGE_BUDGET_BYTES) -> Iterator[Sequence[Item]]:
    """Consecutive runs of `items`, in order, each encoding to at most `budget_bytes`.

    An item larger than the budget goes alone: a message holds at least one item, as the KEP asks.
    Items are not split, so one over the 16 MiB a message may hold (a pod's stats, whose
    containers each carry megabytes of annotations) still fails, with RESOURCE_EXHAUSTED.
    No items, no batches: the stream then ends at once, which the kubelet reads as an empty list.
    """
    start, size = 0, 0
    for index, item in enumerate(items):
        item_size = _entry_bytes(item.ByteSize())
        if index > start and size + item_size > budget_bytes:
            yield items[start:index]
            start, size = index, 0
        size += item_size
    if start < len(items):
        yield items[start:]


def _entry_bytes(item_bytes: int) -> int:
    """An item's size in its response: tag, length as a varint, then the item."""
    return _TAG_BYTES + max(1, (item_bytes.bit_length() + 6) // 7) + item_bytes
