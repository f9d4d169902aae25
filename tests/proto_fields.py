"""Test helper: set a protobuf message's fields from keyword arguments, whatever their kind."""

from __future__ import annotations

from typing import Any, TypeVar

Message = TypeVar("Message")


def with_fields(message: Message, **fields: Any) -> Message:
    """Lists extend repeated fields, dicts update maps, scalars are set, messages copied in."""
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(message, key).extend(value)
        elif isinstance(value, dict):
            getattr(message, key).update(value)
        elif isinstance(value, (str, bool, int, float)):
            setattr(message, key, value)
        else:
            getattr(message, key).CopyFrom(value)
    return message
