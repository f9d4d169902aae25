"""The pure parts of the event-fed index: filter semantics and subscriber fan-out."""

import time

import pytest

from dockershim_py.events import ContainerChange, ConvertedEntries, EventHub, SUBSCRIBER_QUEUE, matches, same_listing

ENTRY = {"Id": "abcdef0123456789", "State": "running", "Labels": {"io.kubernetes.docker.type": "container", "app": "web"}}


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({}, True),
        ({"label": ["io.kubernetes.docker.type=container"]}, True),
        ({"label": ["io.kubernetes.docker.type=podsandbox"]}, False),
        ({"label": ["app"]}, True),
        ({"label": ["missing"]}, False),
        ({"label": ["app=web", "io.kubernetes.docker.type=container"]}, True),
        ({"label": ["app=web", "app2=x"]}, False),
        ({"id": ["abcdef"]}, True),
        ({"id": ["0123"]}, True),  # Docker matches anywhere in the ID; callers apply the prefix rule
        ({"id": ["ffff", "abcd"]}, True),
        ({"id": ["ffff"]}, False),
        ({"label": "app=web"}, True),
        ({"status": ["running"]}, True),
        ({"status": ["exited", "created"]}, False),
        ({"status": ["running"], "label": ["missing"]}, False),
    ],
)
def test_filters_match_like_docker(filters: dict, expected: bool) -> None:
    assert matches(ENTRY, filters) is expected


def test_unindexed_filters_are_refused() -> None:
    with pytest.raises(ValueError):
        matches(ENTRY, {"name": ["web"]})


def _change(n: int) -> ContainerChange:
    return ContainerChange(container_id=f"c{n}", kind="started", attributes={}, at_ns=n)


def _wait_until(predicate) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_every_subscriber_hears_every_change_in_order_built_once() -> None:
    hub = EventHub()
    built: list[str] = []
    hub.start(lambda change: built.append(change.container_id) or change)
    first, second = hub.subscribe(), hub.subscribe()
    for n in range(5):
        hub.publish(_change(n))
    _wait_until(lambda: len(built) == 5)
    first.close()
    second.close()
    assert built == [f"c{n}" for n in range(5)]
    assert [c.container_id for c in first] == [f"c{n}" for n in range(5)]
    assert [c.container_id for c in second] == [f"c{n}" for n in range(5)]


def test_a_slow_subscriber_is_dropped_without_blocking_the_others() -> None:
    hub = EventHub()
    delivered: list[str] = []
    hub.start(lambda change: delivered.append(change.container_id) or change)
    slow, fast = hub.subscribe(), hub.subscribe()
    for n in range(SUBSCRIBER_QUEUE):
        hub.publish(_change(n))
    _wait_until(lambda: len(delivered) == SUBSCRIBER_QUEUE)
    fast_reader = iter(fast)
    heard = [next(fast_reader).container_id for _ in range(10)]  # the fast one keeps up, the slow one not
    for n in range(SUBSCRIBER_QUEUE, SUBSCRIBER_QUEUE + 10):
        hub.publish(_change(n))
    _wait_until(lambda: len(delivered) == SUBSCRIBER_QUEUE + 10)
    assert slow.dropped and not fast.dropped
    fast.close()
    heard += [change.container_id for change in fast_reader]
    assert heard == [f"c{n}" for n in range(SUBSCRIBER_QUEUE + 10)]
    assert list(slow) == []  # the reader learns it was dropped and stops


def test_a_change_that_cannot_be_described_is_skipped_and_the_stream_goes_on() -> None:
    hub = EventHub()

    def build(change: ContainerChange) -> ContainerChange:
        if change.container_id == "c1":
            raise RuntimeError("boom")
        return change

    hub.start(build)
    subscription = hub.subscribe()
    for n in range(3):
        hub.publish(_change(n))
    reader = iter(subscription)
    assert [next(reader).container_id for _ in range(2)] == ["c0", "c2"]


def test_nothing_is_built_without_subscribers() -> None:
    hub = EventHub()
    built: list[ContainerChange] = []
    hub.start(built.append)
    hub.publish(_change(0))
    time.sleep(0.1)
    assert built == []


def test_converted_entries_are_reused_only_for_the_same_entry_object_and_variant() -> None:
    calls: list[str] = []
    cache = ConvertedEntries(lambda entry, variant: calls.append(entry["State"]) or {"converted": entry["State"]})
    entry = {"Id": "a", "State": "running"}
    first = cache.get(entry)
    assert cache.get(entry) is first and calls == ["running"]
    changed = {"Id": "a", "State": "exited"}  # the index replaces the object when the container changes
    assert cache.get(changed) == {"converted": "exited"} and calls == ["running", "exited"]
    cache.get(changed, variant=True)  # something else the conversion depends on changed
    assert calls == ["running", "exited", "exited"]
    cache.keep_only(set())  # a full list no longer shows it
    cache.get(changed, variant=True)
    assert calls == ["running", "exited", "exited", "exited"]


RUNNING = {"Id": "c1", "State": "running", "Status": "Up 5 minutes", "Labels": {"a": "b"}}


@pytest.mark.parametrize(
    ("new", "same"),
    [
        ({**RUNNING, "Status": "Up About an hour"}, True),
        ({**RUNNING, "Status": "Up 6 minutes (healthy)"}, False),
        ({**RUNNING, "State": "exited", "Status": "Exited (0) Less than a second ago"}, False),
        ({**RUNNING, "Labels": {"a": "c"}}, False),
        ({**RUNNING, "Mounts": []}, False),
    ],
)
def test_a_listing_is_the_same_when_only_the_age_in_its_status_moved(new: dict, same: bool) -> None:
    assert same_listing(RUNNING, new) is same


def test_exited_listings_differ_by_exit_code_not_by_age() -> None:
    old = {**RUNNING, "State": "exited", "Status": "Exited (0) 2 minutes ago"}
    assert same_listing(old, {**old, "Status": "Exited (0) 3 hours ago"})
    assert not same_listing(old, {**old, "Status": "Exited (137) 2 minutes ago"})
    assert not same_listing(None, old)


def test_a_container_docker_still_lists_as_before_its_event_is_not_listed_again_by_every_read(monkeypatch) -> None:
    """Docker reports an exit before its list shows it; reads then answer as Docker listed, the refresher re-asks."""
    from dockershim_py import events
    from dockershim_py.docker_client import DockerClient

    docker_says = {"State": "running"}
    asked: list[dict] = []

    def listed(self, filters: dict) -> list[dict]:
        asked.append(filters)
        return [{"Id": "c1", "Labels": {}, "State": docker_says["State"], "Status": ""}]

    monkeypatch.setattr(DockerClient, "list_containers", listed)
    index = events.IndexedDockerClient("unix:///nonexistent.sock", timeout=1)
    index.resync()
    assert len(asked) == 1 and index.fresh
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})  # dockerd's cleanup is not done yet
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    assert len(asked) == 2  # the first read after the event asks Docker
    assert [entry["State"] for entry in index.list_containers({"status": ["running"]})] == ["running"]
    assert len(asked) == 2  # asking again would get the same answer: the index answers
    docker_says["State"] = "exited"
    index._refresh_dirty()  # the refresher's next try
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"]
    assert len(asked) == 3 and not index._dirty
    index._on_event({"Type": "container", "Action": "exec_start: sh -c true", "id": "c1"})  # a probe
    assert not index._dirty
    index._on_event({"Type": "container", "Action": "start", "id": "c1"})
    docker_says["State"] = "running"
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    assert len(asked) == 4
