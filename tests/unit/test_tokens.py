"""The streaming token cache: long random tokens, single use, one-minute expiry, bounded."""

from __future__ import annotations

import re

import grpc
import pytest

from conftest import ManualClock
from dockershim_py.errors import CRIError
from dockershim_py.streaming.tokens import DEFAULT_CAPACITY, DEFAULT_TTL, TokenCache



def test_tokens_are_long_url_safe_and_distinct() -> None:
    cache: TokenCache[int] = TokenCache(capacity=2000)
    tokens = {cache.insert(index) for index in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", token)  # at least 128 bits of base64url


def test_a_token_works_once() -> None:
    cache: TokenCache[str] = TokenCache()
    token = cache.insert("request")
    assert cache.consume(token) == "request"
    assert cache.consume(token) is None
    assert cache.consume("never-issued") is None


def test_tokens_expire_after_a_minute() -> None:
    clock = ManualClock()
    cache: TokenCache[str] = TokenCache(clock=clock)
    assert DEFAULT_TTL == 60.0
    early, late = cache.insert("early"), cache.insert("late")
    clock.now += 59.9
    assert cache.consume(early) == "early"
    clock.now += 0.1
    assert cache.consume(late) is None


def test_a_full_cache_refuses_with_resource_exhausted_until_tokens_go() -> None:
    clock = ManualClock()
    cache: TokenCache[int] = TokenCache(capacity=3, clock=clock)
    tokens = [cache.insert(index) for index in range(3)]
    with pytest.raises(CRIError) as full:
        cache.insert(3)
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    cache.consume(tokens[0])  # a used token frees its place
    cache.insert(4)
    with pytest.raises(CRIError):
        cache.insert(5)
    clock.now += DEFAULT_TTL  # so do expired ones
    assert len(cache) == 0
    cache.insert(6)
    assert DEFAULT_CAPACITY == 1000
