"""The pure parts of the event-fed index: filter semantics and subscriber fan-out."""

import threading
import time

import grpc
import pytest

from dockershim_py import events
from dockershim_py.errors import CRIError
from dockershim_py.events import (
    LISTING_FIELDS, SUBSCRIBER_QUEUE, ContainerChange, ContainerEvents, ConvertedEntries, EventHub, listing_of_entry,
    listing_of_inspect, entry_filter,
)
from dockershim_py.grpc_transport import CallContext

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
    assert entry_filter(filters)(ENTRY) is expected


def test_unindexed_filters_are_refused() -> None:
    with pytest.raises(ValueError):
        entry_filter({"name": ["web"]})


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


def test_a_subscription_cancelled_before_its_handler_ran_ends_at_once() -> None:
    """A client that went away while GetContainerEvents waited for a worker: the worker does not
    wait for the next event, and no subscriber is left behind."""
    hub = EventHub()
    events = ContainerEvents(hub, sandboxes=None, containers=None)
    context = CallContext([], None, "test")
    context.finish(cancelled=True)
    stream = events.follow(context.add_callback)
    ended: list[object] = []
    worker = threading.Thread(target=lambda: ended.append(next(stream, "ended")), daemon=True)
    worker.start()
    worker.join(2)
    assert ended == ["ended"] and hub._subscribers == []


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
    assert slow._queue.qsize() <= 2  # what it will never read is not kept for it, only end markers
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


def test_a_change_docker_could_not_describe_is_told_again_once_it_answers() -> None:
    """dockerd stopping its containers as it shuts down: their stopped events had no pod status, which
    the kubelet skips, and the reconnect's resync took them for told."""
    hub = EventHub()
    docker_down = [True]

    def build(change: ContainerChange) -> ContainerChange:
        if docker_down[0]:
            raise events.Undescribed("cannot reach the Docker daemon")
        return change

    hub.start(build)
    subscription = hub.subscribe()
    reader = iter(subscription)
    hub.publish(_change(1))
    _wait_until(lambda: len(hub._undescribed) == 1)
    docker_down[0] = False
    hub.publish(_change(2))
    hub.retell()
    assert [next(reader).container_id for _ in range(2)] == ["c2", "c1"]
    subscription.close()


def test_a_change_whose_description_failed_is_tried_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's event waits while one member's status cannot be had (Docker slow with a stopping
    container): told without that member, a kubelet with EventedPLEG would make it again. It was
    tried again only at a reconnect or the 30 s resync."""
    monkeypatch.setattr(events, "UNDESCRIBED_RETRY_SECONDS", 0.1)
    hub = EventHub()
    slow = [2]

    def build(change: ContainerChange) -> ContainerChange:
        if slow[0]:
            slow[0] -= 1
            raise events.Undescribed("container c9: Docker did not answer in time")
        return change

    hub.start(build)
    subscription = hub.subscribe()
    reader = iter(subscription)
    told: list[str] = []
    receiver = threading.Thread(target=lambda: told.append(next(reader).container_id), daemon=True)
    receiver.start()
    hub.publish(_change(1))
    receiver.join(5)
    assert told == ["c1"]
    subscription.close()


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


LISTED = {
    "Id": "c1", "Names": ["/k8s_app_web_ns_uid_0"], "Image": "busybox:1.0", "ImageID": "sha256:b1", "Created": 1795380586,
    "State": "running", "Status": "Up 5 minutes", "Labels": {"a": "b"}, "Command": "sh", "Ports": [],
    "Mounts": [{"Destination": "/v", "Type": "volume"}, {"Destination": "/h", "Type": "bind"}],
}
INSPECTED = {
    "Id": "c1", "Name": "/k8s_app_web_ns_uid_0", "Image": "sha256:b1", "Created": "2026-11-22T20:49:46.52632489Z",
    "State": {"Status": "running", "Running": True, "Pid": 42}, "Config": {"Image": "busybox:1.0", "Labels": {"a": "b"}},
    "Mounts": [{"Destination": "/h", "Type": "bind"}, {"Destination": "/v", "Type": "volume"}],
}


def test_a_listing_keeps_what_the_shim_reads_with_mounts_in_a_stable_order() -> None:
    """Docker orders mounts from a Go map: two lists of an unchanged container must compare equal."""
    listing = listing_of_entry(LISTED)
    assert set(listing) == set(LISTING_FIELDS)  # no Status: its age text changes by itself
    assert [mount["Destination"] for mount in listing["Mounts"]] == ["/h", "/v"]
    assert listing == listing_of_entry({**LISTED, "Status": "Up About an hour", "Mounts": LISTED["Mounts"][::-1]})
    assert listing != listing_of_entry({**LISTED, "State": "exited"})
    assert listing_of_entry({**LISTED, "Labels": None, "Mounts": None})["Labels"] == {}


def test_an_inspect_gives_the_listing_docker_would_show() -> None:
    assert listing_of_inspect(INSPECTED, reference_image_id="sha256:b1") == listing_of_entry(LISTED)


def test_a_reference_that_names_another_image_now_is_listed_as_the_image_id() -> None:
    """As Docker lists it once the tag moved or was removed."""
    assert listing_of_inspect(INSPECTED, reference_image_id="sha256:other")["Image"] == "sha256:b1"
    assert listing_of_inspect(INSPECTED, reference_image_id=None)["Image"] == "sha256:b1"
    by_id = {**INSPECTED, "Config": {**INSPECTED["Config"], "Image": "sha256:b1"}}
    assert listing_of_inspect(by_id, reference_image_id=None)["Image"] == "sha256:b1"


class FakeDocker:
    """What the index asks Docker, answered from `states` (container id -> state)."""

    def __init__(self, monkeypatch, states: dict[str, str]) -> None:
        from dockershim_py.docker_client import DockerClient

        self.states = states
        self.asked: list[str] = []
        monkeypatch.setattr(DockerClient, "list_containers", lambda _, filters: self.listed(filters))
        monkeypatch.setattr(DockerClient, "inspect_container", lambda _, container_id: self.inspected(container_id))
        monkeypatch.setattr(DockerClient, "inspect_image", lambda _, reference: {"Id": "sha256:b1"})

    def listed(self, filters: dict) -> list[dict]:
        self.asked.append("list")
        wanted = filters.get("id") or list(self.states)
        return [{**LISTED, "Id": container_id, "State": state} for container_id, state in self.states.items()
                if container_id in wanted]

    def inspected(self, container_id: str) -> dict:
        self.asked.append(f"inspect {container_id}")
        if container_id not in self.states:
            raise CRIError(grpc.StatusCode.NOT_FOUND, f"container {container_id}: not found")
        return {**INSPECTED, "Id": container_id, "State": {"Status": self.states[container_id]}}


def fresh_index(monkeypatch, states: dict[str, str]) -> tuple[events.IndexedDockerClient, FakeDocker]:
    docker = FakeDocker(monkeypatch, states)
    index = events.IndexedDockerClient("unix:///nonexistent.sock", timeout=1)
    index.resync()
    assert docker.asked == ["list"] and index.fresh
    docker.asked.clear()
    return index, docker


def test_an_older_inspect_does_not_settle_a_mark_that_a_newer_list_left_unsettled(monkeypatch) -> None:
    """The refresher's inspect of a dying container waits; a relist meanwhile stores Docker's list,
    which still says running. The inspect's exit, older than that list, is not stored, and it must not
    clear the mark either: the index would answer running with nothing left to correct it."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})
    inspect = docker.inspected

    def slow_inspect(container_id: str) -> dict:
        assert [entry["State"] for entry in index.list_containers({})] == ["running"]  # Docker's list lags
        docker.states["c1"] = "exited"
        return inspect(container_id)

    docker.inspected = slow_inspect
    index._reread_in_background()
    docker.inspected = inspect
    assert "c1" in index._dirty  # still to be confirmed
    index._reread_in_background()  # the refresher's next round
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"] and not index._dirty


def test_a_fetch_that_began_before_a_removal_cannot_bring_the_container_back(monkeypatch) -> None:
    """A resync between the destroy and the late answer keeps the destroy's guard while that fetch is out."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    index._on_event({"Type": "container", "Action": "update", "id": "c1"})
    inspect = docker.inspected

    def answer_then_removed(container_id: str) -> dict:
        answer = inspect(container_id)  # Docker answered while c1 still existed
        del docker.states["c1"]
        index._on_event({"Type": "container", "Action": "destroy", "id": "c1"})
        index.resync("reconnect")
        return answer

    docker.inspected = answer_then_removed
    index._reread_in_background()
    docker.inspected = inspect
    assert index.list_containers({}) == []
    index.resync()  # with no fetch under way, the removed container's guard goes
    assert "c1" not in index._applied and index.list_containers({}) == []


def test_a_resync_that_the_event_stream_dropped_under_leaves_the_index_stale(monkeypatch) -> None:
    """Events of the outage are missing from what it took in: reads go to Docker until the reconnect's resync."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    listed = docker.listed

    def list_as_the_stream_drops(filters: dict) -> list[dict]:
        answer = listed(filters)
        index._fresh, index._outages = False, index._outages + 1  # what the event thread does then
        return answer

    docker.listed = list_as_the_stream_drops
    index.resync("periodic")
    assert not index.fresh
    docker.listed = listed
    index.resync("reconnect")
    assert index.fresh


@pytest.mark.parametrize("before, after, kinds", [
    (None, "created", ["created"]),
    (None, "running", ["created", "started"]),
    (None, "exited", ["created", "started", "stopped"]),  # ran while the stream was down
    ("created", "exited", ["started", "stopped"]),
    ("created", "running", ["started"]),
    ("running", "exited", ["stopped"]),
    ("running", None, ["stopped", "deleted"]),
    ("exited", None, ["deleted"]),
    ("running", "running", []),
    ("exited", "exited", []),
])
def test_the_changes_between_two_list_entries(before, after, kinds) -> None:
    entry = lambda state: None if state is None else {**LISTED, "State": state}  # noqa: E731
    changes = events.changes_between("c1", entry(before), entry(after), at_ns=7)
    assert [change.kind for change in changes] == kinds
    assert all(change.attributes == LISTED["Labels"] and change.at_ns == 7 for change in changes)


def test_a_resync_after_the_event_stream_was_down_tells_subscribers_what_changed(monkeypatch) -> None:
    index, docker = fresh_index(monkeypatch, {"c1": "running", "c2": "running"})
    told: list[tuple[str, str]] = []
    index.events.publish = lambda change: told.append((change.container_id, change.kind))
    docker.states.update(c1="running", c4="created")
    index.resync("reconnect")
    assert told == [("c4", "created")]
    told.clear()
    # An event that never came on a stream that seemed up (dockerd drops them for a reader far
    # behind): the periodic resync tells it, and the event, should it come late, is not told again.
    docker.states.update(c1="exited")
    del docker.states["c2"]
    index.resync("periodic")
    assert sorted(told) == [("c1", "stopped"), ("c2", "deleted"), ("c2", "stopped")]
    index._on_event({"Type": "container", "Action": "die", "id": "c1", "timeNano": time.time_ns()})
    assert len(told) == 3
    index.resync("start")  # the first list at start tells nothing: there was nothing before it
    assert len(told) == 3


def test_a_change_told_once_is_not_told_again_by_a_replayed_event(monkeypatch) -> None:
    """After a reconnect Docker replays the second before the list, whose changes the resync told."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    told: list[tuple[str, str]] = []
    index.events.publish = lambda change: told.append((change.container_id, change.kind))
    docker.states.update(c1="exited")
    index.resync("reconnect")
    index._on_event({"Type": "container", "Action": "die", "id": "c1", "timeNano": time.time_ns()})
    index._on_event({"Type": "container", "Action": "die", "id": "c1", "timeNano": time.time_ns()})
    assert told == [("c1", "stopped")]
    for action in ("start", "die", "destroy", "destroy"):
        index._on_event({"Type": "container", "Action": action, "id": "c1", "timeNano": time.time_ns()})
    assert told == [("c1", "stopped"), ("c1", "started"), ("c1", "stopped"), ("c1", "deleted")]


def test_removed_containers_last_changes_are_remembered_within_a_bound(monkeypatch) -> None:
    monkeypatch.setattr(events, "TOLD_DELETED_KEPT", 2)
    index, _ = fresh_index(monkeypatch, {})
    index.events.publish = lambda change: None
    for container_id in ("a", "b", "c"):
        index._on_event({"Type": "container", "Action": "destroy", "id": container_id})
    assert set(index._told) == {"b", "c"}


def test_a_container_found_gone_by_a_resync_is_no_longer_remembered_as_told(monkeypatch) -> None:
    """Its destroy event never came: the last change told of it must not stay in memory for good."""
    index, docker = fresh_index(monkeypatch, {"c1": "running", "c2": "running"})
    index.events.publish = lambda change: None
    for container_id in ("c1", "c2"):
        index._on_event({"Type": "container", "Action": "start", "id": container_id, "timeNano": time.time_ns()})
    del docker.states["c1"]
    index.resync("start")  # a resync that tells nothing (the first) forgets it
    assert set(index._told) == {"c2"}
    del docker.states["c2"]
    index.resync("periodic")  # this one tells of the deletion: remembered as told, within the bound
    assert index._told == {"c2": "deleted"}


def test_a_container_docker_still_shows_as_before_its_event_is_not_asked_about_by_every_read(monkeypatch) -> None:
    """Docker may report an exit before it shows it; reads then answer as Docker did, the refresher re-asks."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})  # dockerd's cleanup is not done yet
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    assert docker.asked == ["list"]  # the first read after the event asks Docker
    assert [entry["State"] for entry in index.list_containers({"status": ["running"]})] == ["running"]
    assert docker.asked == ["list"]  # asking again would get the same answer: the index answers
    docker.states["c1"] = "exited"
    index._reread_in_background()  # the refresher's next try
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"]
    assert docker.asked == ["list", "inspect c1"] and not index._dirty
    index._on_event({"Type": "container", "Action": "exec_start: sh -c true", "id": "c1"})  # a probe
    assert not index._dirty
    index._on_event({"Type": "container", "Action": "start", "id": "c1"})
    docker.states["c1"] = "running"
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    assert docker.asked == ["list", "inspect c1", "list"]


def test_the_inspect_that_re_reads_a_changed_container_answers_the_status_calls_after_it(monkeypatch) -> None:
    """One Docker request per change: the kubelet asks the status of every container whose state moved."""
    index, docker = fresh_index(monkeypatch, {"c1": "running", "c2": "running"})
    docker.states.update(c1="exited", c2="exited")
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})
    index._on_event({"Type": "container", "Action": "die", "id": "c2"})
    index._reread_in_background()
    assert docker.asked == ["inspect c1", "inspect c2"]
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"] * 2
    assert index.inspect_container("c1")["State"]["Status"] == "exited"
    assert docker.asked == ["inspect c1", "inspect c2"]
    docker.states["c1"] = "running"
    index._on_event({"Type": "container", "Action": "start", "id": "c1"})
    assert index.inspect_container("c1")["State"]["Status"] == "running"  # a status call re-reads it at once
    assert [entry["State"] for entry in index.list_containers({"id": ["c1"]})] == ["running"]  # for the list too
    assert index.inspect_container("c1")["State"]["Status"] == "running"
    assert docker.asked == ["inspect c1", "inspect c2", "inspect c1"]


def test_the_refresher_leaves_a_container_the_shim_is_changing_until_it_is_done(monkeypatch) -> None:
    """dockerd answers an inspect only after a start or stop in progress ends: asking would hold every re-read."""
    index, docker = fresh_index(monkeypatch, {"c1": "created"})

    def start() -> None:
        index._on_event({"Type": "container", "Action": "start", "id": "c1"})  # Docker's event, before the call returns
        index._reread_in_background()
        assert docker.asked == []  # not asked while the start is in progress
        # A read beside the call may answer as before it: no Docker request either.
        assert [entry["State"] for entry in index.list_containers({})] == ["created"]
        assert docker.asked == []
        docker.states["c1"] = "running"

    index._changing("c1", "start", start)
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    index._reread_in_background()
    assert docker.asked == ["inspect c1"] and not index._dirty
    assert index.inspect_container("c1")["State"]["Status"] == "running"
    assert docker.asked == ["inspect c1"]


def test_the_shims_own_start_and_stop_are_listed_as_they_returned_without_asking_docker(monkeypatch) -> None:
    """A churning node's relists must not each wait for a Docker list call; the refresher confirms."""
    index, docker = fresh_index(monkeypatch, {"c1": "created"})

    def start() -> None:
        index._on_event({"Type": "container", "Action": "start", "id": "c1"})  # Docker's echo, before the call returns
        docker.states["c1"] = "running"

    index._changing("c1", "start", start)
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]
    assert docker.asked == []
    index._reread_in_background()
    assert docker.asked == ["inspect c1"] and not index._dirty

    def stop() -> None:
        index._on_event({"Type": "container", "Action": "die", "id": "c1"})
        index._on_event({"Type": "container", "Action": "stop", "id": "c1"})
        docker.states["c1"] = "exited"

    index._changing("c1", "die", stop)
    assert [entry["State"] for entry in index.list_containers({"status": ["running"]})] == []
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"]
    assert docker.asked == ["inspect c1"]
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})  # an echo after the call: already shown
    assert index.list_containers({})[0]["State"] == "exited" and docker.asked == ["inspect c1"]


def test_an_exit_during_the_shims_start_is_re_read_not_taken_from_the_call(monkeypatch) -> None:
    index, docker = fresh_index(monkeypatch, {"c1": "created"})

    def start_that_exits_at_once() -> None:
        index._on_event({"Type": "container", "Action": "start", "id": "c1"})
        index._on_event({"Type": "container", "Action": "die", "id": "c1"})
        docker.states["c1"] = "exited"

    index._changing("c1", "start", start_that_exits_at_once)
    assert [entry["State"] for entry in index.list_containers({})] == ["exited"]
    assert docker.asked == ["list"]


def test_the_shims_own_create_is_in_the_index_when_the_call_returns(monkeypatch) -> None:
    """The relist after CreateContainer, and StartContainer's inspect, ask Docker nothing more."""
    from dockershim_py.docker_client import DockerClient

    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    monkeypatch.setattr(DockerClient, "create_container",
                        lambda _, name, body: docker.states.setdefault("c2", "created") and "c2")
    assert index.create_container("app", {}) == "c2"
    assert docker.asked == ["inspect c2"] and not index._dirty
    index._on_event({"Type": "container", "Action": "create", "id": "c2"})  # Docker's echo
    assert sorted(entry["Id"] for entry in index.list_containers({})) == ["c1", "c2"]
    assert index.inspect_container("c2")["State"]["Status"] == "created"
    assert docker.asked == ["inspect c2"]


def test_dockers_echo_of_the_shims_create_during_its_re_read_asks_nothing_more(monkeypatch) -> None:
    """dockerd logs a create before it answers: its echo often comes while the shim reads the
    container it made, and StartContainer's inspect then finds that read kept."""
    from dockershim_py.docker_client import DockerClient

    index, docker = fresh_index(monkeypatch, {})
    monkeypatch.setattr(DockerClient, "create_container",
                        lambda _, name, body: docker.states.setdefault("c1", "created") and "c1")
    inspected = docker.inspected

    def echo_meanwhile(container_id: str) -> dict:
        answer = inspected(container_id)
        index._on_event({"Type": "container", "Action": "create", "id": container_id})
        return answer

    docker.inspected = echo_meanwhile
    assert index.create_container("app", {}) == "c1"
    docker.inspected = inspected
    assert not index._dirty
    assert index.inspect_container("c1")["State"]["Status"] == "created"
    assert [entry["Id"] for entry in index.list_containers({})] == ["c1"]
    assert docker.asked == ["inspect c1"]
    index._on_event({"Type": "container", "Action": "start", "id": "c1"})  # any other event still re-reads
    docker.states["c1"] = "running"
    assert index.inspect_container("c1")["State"]["Status"] == "running"
    assert docker.asked == ["inspect c1", "inspect c1"]


def test_a_fetch_settles_a_mark_made_before_it_began_but_not_one_made_after(monkeypatch) -> None:
    index, docker = fresh_index(monkeypatch, {})
    docker.states["c1"] = "created"
    index._changed_by_shim("c1", "create")
    asked = index._dirty["c1"]
    index._on_event({"Type": "container", "Action": "rename", "id": "c1"})  # marks it again
    assert index._dirty["c1"] is not asked
    index._apply({"c1": asked}, {"c1": index._inspect_listing("c1")})
    assert not index._dirty
    docker.states["c1"] = "running"
    index._changing("c1", "start", lambda: None)

    index._changed_by_shim("c1", "die")  # listed as running: the stop's outcome is recorded, to confirm
    asked = index._dirty["c1"]
    docker.states["c1"] = "exited"
    fetched = index._inspect_listing("c1")
    docker.states["c1"] = "running"
    index._on_event({"Type": "container", "Action": "start", "id": "c1"})  # after the fetch began
    index._apply({"c1": asked}, {"c1": fetched})
    assert "c1" in index._dirty and not index._dirty["c1"].reread  # the next read asks Docker
    assert [entry["State"] for entry in index.list_containers({})] == ["running"]


def test_a_rename_during_the_shims_call_is_re_read_at_once(monkeypatch) -> None:
    """Only lifecycle events may wait for the call that caused them."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})

    def stop() -> None:
        index._on_event({"Type": "container", "Action": "die", "id": "c1"})
        assert index.list_containers({})[0]["State"] == "running" and docker.asked == []
        index._on_event({"Type": "container", "Action": "rename", "id": "c1"})
        index.list_containers({})
        assert docker.asked == ["list"]
        docker.states["c1"] = "exited"

    index._changing("c1", "die", stop)


def test_a_stop_that_changed_nothing_is_re_read(monkeypatch) -> None:
    """Stopping a container that never ran leaves it created: the call's outcome does not say so."""
    index, docker = fresh_index(monkeypatch, {"c1": "created"})
    index._changing("c1", "die", lambda: None)
    assert [entry["State"] for entry in index.list_containers({})] == ["created"]
    assert docker.asked == ["list"]


def test_a_removed_container_leaves_the_index_without_asking_docker(monkeypatch) -> None:
    index, docker = fresh_index(monkeypatch, {"c1": "exited", "c2": "exited"})
    del docker.states["c1"]
    index._on_event({"Type": "container", "Action": "destroy", "id": "c1"})
    del docker.states["c2"]
    index._changing("c2", "destroy", lambda: None)
    assert index.list_containers({}) == [] and docker.asked == []
    with pytest.raises(CRIError):
        index.inspect_container("c1")


def test_the_refresher_re_reads_a_burst_of_changes_in_one_list_call(monkeypatch) -> None:
    many = events.INSPECTED_REFRESH_MAX + 1
    index, docker = fresh_index(monkeypatch, {f"c{n}": "running" for n in range(many)})
    for n in range(many):
        docker.states[f"c{n}"] = "exited"
        index._on_event({"Type": "container", "Action": "die", "id": f"c{n}"})
    index._reread_in_background()
    assert docker.asked == ["list"] and not index._dirty
    assert {entry["State"] for entry in index.list_containers({})} == {"exited"}


def test_a_filtered_list_is_made_once_while_the_index_is_unchanged_and_again_after_any_change(monkeypatch) -> None:
    """The kubelet relists with the same filters every second; only a change may cost a new scan."""
    index, docker = fresh_index(monkeypatch, {"c1": "running", "c2": "exited"})
    scans: list[dict] = []
    real_filter = events.entry_filter
    monkeypatch.setattr(events, "entry_filter", lambda filters: scans.append(filters) or real_filter(filters))
    running = {"status": ["running"]}
    first = index.list_containers(running)
    first.clear()  # a caller's copy: changing it changes nothing kept
    assert [entry["Id"] for entry in index.list_containers({"status": "running"})] == ["c1"]
    assert len(scans) == 1 and docker.asked == []
    docker.states["c2"] = "running"
    index._on_event({"Type": "container", "Action": "start", "id": "c2"})
    assert sorted(entry["Id"] for entry in index.list_containers(running)) == ["c1", "c2"]
    assert len(scans) == 2
    del docker.states["c1"]
    index._on_event({"Type": "container", "Action": "destroy", "id": "c1"})
    assert [entry["Id"] for entry in index.list_containers(running)] == ["c2"]
    docker.states["c3"] = "running"
    index.resync()  # a container the events missed
    assert sorted(entry["Id"] for entry in index.list_containers(running)) == ["c2", "c3"]
    assert len(scans) == 4


def test_filters_spelled_differently_are_the_same_kept_list() -> None:
    assert events.filter_key({"label": "a=b", "id": ["x"]}) == events.filter_key({"id": ("x",), "label": ["a=b"]})
    assert events.filter_key({"label": ["a=b"]}) != events.filter_key({"label": ["a=c"]})


def test_catch_up_takes_in_what_docker_logged_before_the_stream_brought_it(monkeypatch) -> None:
    """RemovePodSandbox must see a member made behind the shim's back a moment ago, or it would leak it."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    subscriber = index.events.subscribe()
    index.events.start(lambda change: change)
    created = {"Type": "container", "Action": "create", "id": "c2", "timeNano": time.time_ns()}
    asked: list[tuple[float, float]] = []

    def past_events(since: float, until: float) -> list[dict]:
        asked.append((since, until))
        return [{"Type": "network", "Action": "create", "id": "n1"}, created]  # a network is no container

    monkeypatch.setattr(index, "past_events", past_events)
    docker.states["c2"] = "created"  # Docker made it; its event is still on the way
    assert [entry["Id"] for entry in index.list_containers({})] == ["c1"]
    index.catch_up()
    assert sorted(entry["Id"] for entry in index.list_containers({})) == ["c1", "c2"]
    since, until = asked[0]
    assert since < created["timeNano"] / 1e9 <= until
    index._on_event(created)  # the stream brings it after all: one change for subscribers
    index.catch_up()  # and catching up again asks from that event on
    assert asked[1][0] == created["timeNano"] / 1e9
    _wait_until(lambda: subscriber._queue.qsize() == 1)
    subscriber.close()
    assert [change.kind for change in subscriber] == ["created"]


def test_catch_up_lists_everything_when_docker_may_have_dropped_events(monkeypatch) -> None:
    """dockerd keeps its last 256 events: when all of them came within the stream's possible lag,
    a change may be in neither the log nor the stream yet."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    burst = [{"Type": "network", "Action": "connect", "id": "n1", "timeNano": time.time_ns()}] * 255
    monkeypatch.setattr(index, "past_events", lambda since, until: burst)
    docker.states["c2"] = "running"  # made in the burst, its event lost
    index.catch_up()
    assert docker.asked == []  # 255: all that happened is there
    monkeypatch.setattr(index, "past_events", lambda since, until: burst + burst[:1])
    index.catch_up()
    assert docker.asked == ["list"]
    assert sorted(entry["Id"] for entry in index.list_containers({})) == ["c1", "c2"]


def test_catch_up_asks_only_for_what_the_stream_may_still_be_bringing(monkeypatch) -> None:
    """A node whose exec probes fill Docker's log: what is older than the stream's lag the stream
    brought, so it is not asked for, and no StopPodSandbox pays for a full list."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    now_ns = time.time_ns()
    logged = [{"Type": "container", "Action": "exec_start: sh -c true", "id": "c1",
               "timeNano": now_ns - int(age * 1e9)} for age in [events.STREAM_LAG_SECONDS + 60] * 250 + [1.0] * 6]
    asked: list[float] = []

    def past_events(since: float, until: float) -> list[dict]:
        asked.append(since)
        return [event for event in logged if since * 1e9 <= event["timeNano"] <= until * 1e9]

    monkeypatch.setattr(index, "past_events", past_events)
    index._last_event_ns = now_ns - int(600e9)  # the last create or start was ten minutes ago
    index.catch_up()
    assert asked[0] >= now_ns / 1e9 - events.STREAM_LAG_SECONDS - 1
    assert docker.asked == []


def test_catch_up_asks_docker_nothing_while_the_index_is_stale(monkeypatch) -> None:
    index, _ = fresh_index(monkeypatch, {"c1": "running"})
    index._fresh = False
    monkeypatch.setattr(index, "past_events", lambda *_args, **_kwargs: pytest.fail("asked Docker"))
    index.catch_up()


def test_a_failed_re_read_is_tried_again_and_leaves_the_index_fresh(monkeypatch) -> None:
    """An inspect that timed out (a container stuck stopping) made the index stale for good: nothing
    set it fresh again while the event stream stayed up, and every read went to Docker."""
    monkeypatch.setattr(events, "REREAD_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(events, "REFRESH_GATHER_SECONDS", 0.01)
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    inspect, failures = docker.inspected, []

    def busy_once(container_id: str) -> dict:
        if not failures:
            failures.append(container_id)
            raise CRIError(grpc.StatusCode.DEADLINE_EXCEEDED, "inspect c1: Docker did not answer in time")
        return inspect(container_id)

    docker.inspected = busy_once
    refresher = threading.Thread(target=index._refresh_when_dirty, daemon=True)
    refresher.start()
    try:
        docker.states["c1"] = "exited"
        index._on_event({"Type": "container", "Action": "die", "id": "c1"})
        _wait_until(lambda: not index._dirty)
        assert failures == ["c1"] and index.fresh
        assert [entry["State"] for entry in index.list_containers({})] == ["exited"]
    finally:
        index._stopping.set()
        index._dirty_signal.set()
        refresher.join(timeout=5)


def test_an_event_stream_refused_at_once_is_retried_with_a_growing_pause(monkeypatch) -> None:
    """Lists work but Docker refuses /events (an authorization plugin's 403): each retry lists everything,
    and it was retried every 0.1 s for good."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})

    def refused(*args, **kwargs) -> None:
        raise CRIError(grpc.StatusCode.PERMISSION_DENIED, "follow Docker events: authorization denied")

    monkeypatch.setattr(index, "follow_events", refused)
    follower = threading.Thread(target=index._follow, daemon=True)
    follower.start()
    time.sleep(2)
    index._stopping.set()
    follower.join(timeout=10)
    assert 3 <= docker.asked.count("list") <= 6  # 0.1, 0.2, 0.4, 0.8 s apart: not twenty in 2 s


def test_network_events_mark_the_container_not_the_network_and_keep_a_stricter_mark(monkeypatch) -> None:
    """A network's own destroy carries the network's ID, no container: it must not read as a removal.
    A connect re-reads the container; a disconnect after its die keeps the die's expectation."""
    index, docker = fresh_index(monkeypatch, {"c1": "running"})
    index._on_event({"Type": "network", "Action": "destroy", "Actor": {"ID": "c1", "Attributes": {"name": "n"}}})
    assert [entry["Id"] for entry in index.list_containers({})] == ["c1"] and not index._dirty
    joined = {"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {"container": "c1"}}}
    index._on_event(joined)
    assert index._dirty["c1"].settled is events._any_state
    assert [entry["Id"] for entry in index.list_containers({})] == ["c1"] and docker.asked == []  # lists wait for nothing
    index._reread_in_background()
    assert not index._dirty and docker.asked == ["inspect c1"]
    index._on_event({"Type": "container", "Action": "die", "id": "c1"})
    die_mark = index._dirty["c1"]
    index._on_event({**joined, "Action": "disconnect"})
    # The die's expectation stays, marked anew: a re-read under way since before does not settle it.
    assert index._dirty["c1"].settled is die_mark.settled and index._dirty["c1"].marked > die_mark.marked
