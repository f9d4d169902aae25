"""Docker's event stream, feeding an in-memory index of containers and the CRI container events.

The kubelet relists every sandbox and container every second and asks a status for every
container of a changed pod. `IndexedDockerClient` answers those list and inspect requests from
memory while the index is fresh: filled by a full list, kept current by Docker's events (the
containers they name are marked dirty and re-read in batches, and a read never answers for a
dirty container from memory), re-listed periodically as a safety net, and marked dirty
by every change the shim itself makes before that call returns. Image inspects are kept too,
until any image event or the shim's own pull or removal. While the event stream is down the
index is stale and every request goes to Docker, so a stale index never answers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from . import image_reference, labels, telemetry
from .api import api_pb2 as api
from .docker_client import DOCKER_EVENTS_KEPT, DockerClient
from .errors import CRIError
from .timestamps import parse_docker_time

if TYPE_CHECKING:
    from .container import ContainerService
    from .sandbox import SandboxService

log = logging.getLogger(__name__)
T = TypeVar("T")

RESYNC_SECONDS = 30.0
# At the shim's stop, how long the event thread is given to end (its stream is cancelled first).
STOP_JOIN_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 5.0
# How far behind Docker the event stream may fall, at the most, under load (it takes an event in
# well under a millisecond): catch_up's bound on what the stream may not have brought yet.
STREAM_LAG_SECONDS = 5.0
# The actions that change what a list or an inspect says about a container, and those that may
# move an image reference; dockerd sends no others (an exec probe alone makes three events).
CONTAINER_ACTIONS = ("create", "start", "restart", "die", "stop", "oom", "destroy", "update", "rename", "pause",
                     "unpause", "health_status")
IMAGE_ACTIONS = ("pull", "tag", "untag", "delete", "import", "load")
# A container joining or leaving a network (an operator's `docker network connect`) changes its addresses.
NETWORK_ACTIONS = ("connect", "disconnect")
# A commit makes an image too, and an untagged one comes with no image event.
COMMIT_ACTION = "commit"
# Every action the index follows.
FOLLOWED_ACTIONS = CONTAINER_ACTIONS + IMAGE_ACTIONS + NETWORK_ACTIONS + (COMMIT_ACTION,)
FOLLOWED_TYPES = ("container", "image", "network")
# What the kubelet's evented PLEG hears, from Docker's actions.
LIFECYCLE_ACTIONS = {"create": "created", "start": "started", "die": "stopped", "destroy": "deleted"}
SUBSCRIBER_QUEUE = 1024
# Resyncs that tell GetContainerEvents subscribers the changes they find: after Docker's events may
# have been lost (its stream was down, or its log overflowed), and the periodic one, for an event
# that never came on a stream that seemed up (dockerd drops events for a reader 1024 behind; a
# stalled stream says nothing). A change an event tells too is told once (see _tell).
RESYNCS_THAT_TELL = frozenset({"reconnect", "catch-up", "periodic"})
IMAGE_INSPECTS_KEPT = 256
# Removed containers whose last told change is remembered, so a replayed destroy is not told twice.
TOLD_DELETED_KEPT = 4096


# What Docker's list must show after an action. dockerd announces an action before its list
# (a replica of its state) shows it, so a container stays dirty until its list entry agrees.
_EXPECTED_STATE: dict[str, Callable[[dict[str, Any] | None], bool]] = {
    "create": lambda entry: entry is not None,
    "start": lambda entry: entry is not None and entry.get("State") == "running",
    "die": lambda entry: entry is None or entry.get("State") != "running",
    "stop": lambda entry: entry is None or entry.get("State") != "running",
    "oom": lambda entry: entry is None or entry.get("State") != "running",
    "destroy": lambda entry: entry is None,
}
# The state a container is in once the shim's own start or stop returned, by the state it was
# listed in before; other transitions (a no-op stop, a paused container) are re-read instead.
_STATE_AFTER_SHIM: dict[str, dict[str, str]] = {
    "start": {"created": "running", "exited": "running"},
    "die": {"running": "exited"},
}
SETTLE_SECONDS = 2.0
REFRESH_GATHER_SECONDS = 0.05
# Docker announces a container's exit before its cleanup, and lists it as running until that is
# done (often a few hundred ms): the refresher asks again after 50, 100, 200, 200... ms.
SETTLE_RETRY_MAX_SECONDS = 0.2
# After a failed re-read (Docker busy or slow), the refresher waits at least this long, doubling.
REREAD_RETRY_SECONDS = 0.5
# Up to this many changed containers are re-read by inspect, which answers for the list entry and
# the status calls that follow a change alike; more (a burst) are re-read in one list call.
INSPECTED_REFRESH_MAX = 8
# What the shim reads from a list entry, and all the index keeps of one.
LISTING_FIELDS = ("Id", "Names", "Image", "ImageID", "Created", "State", "Labels", "Mounts")


@dataclasses.dataclass(frozen=True)
class _Dirty:
    marked: int  # sequence number of the event
    settled: Callable[[dict[str, Any] | None], bool]
    give_up_at: float
    # Listed since it was marked, but Docker's list did not show the change yet, or the index
    # shows the outcome of the shim's own call: reads answer as the index does (asking Docker
    # again would say the same until it catches up) while the refresher keeps asking.
    reread: bool = False


def _any_state(entry: dict[str, Any] | None) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class ContainerChange:
    """A lifecycle change of one container, for GetContainerEvents."""

    container_id: str
    kind: str  # created, started, stopped or deleted
    attributes: dict[str, str]  # the container's labels, its name and image, as Docker reports them
    at_ns: int


def changes_between(container_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
                    at_ns: int) -> list[ContainerChange]:
    """The lifecycle changes that took a container from one list entry to the next, in order: what
    GetContainerEvents subscribers missed while Docker's event stream was down."""
    running_before = before is not None and before.get("State") == "running"
    running_after = after is not None and after.get("State") == "running"
    # Exited (or dead) now, never seen running: it started and stopped unseen (a failed start
    # lists as created). An init container the kubelet started just then would be heard of no more.
    ran_unseen = (after is not None and after.get("State") in ("exited", "dead")
                  and (before is None or before.get("State") == "created"))
    kinds = []
    if before is None and after is not None:
        kinds.append("created")
    if (running_after and not running_before) or ran_unseen:
        kinds.append("started")
    if (running_before and not running_after) or ran_unseen:
        kinds.append("stopped")
    if before is not None and after is None:
        kinds.append("deleted")
    labels_of = (after or before or {}).get("Labels") or {}
    return [ContainerChange(container_id, kind, dict(labels_of), at_ns) for kind in kinds]


INDEXED_FILTERS = {"label", "id", "status"}
# Filtered lists kept while the index is unchanged; past this many filters they are all dropped.
FILTERED_LISTS_KEPT = 64


def listing_of_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of a list entry the shim reads; mounts in a stable order (Docker's comes from a Go map)."""
    listing = {field: entry.get(field) for field in LISTING_FIELDS}
    listing["Labels"] = listing["Labels"] or {}
    listing["Mounts"] = sorted(listing["Mounts"] or [], key=lambda mount: str(mount.get("Destination")))
    return listing


def listing_of_inspect(inspect: dict[str, Any], reference_image_id: str | None) -> dict[str, Any]:
    """The list entry Docker would show for an inspected container.

    `reference_image_id`: the image the container's configured reference names now. Docker lists
    that reference while it still names the container's image, and the image ID once it does not.
    """
    config = inspect.get("Config") or {}
    image_id = inspect.get("Image") or ""
    reference = config.get("Image") or ""
    return listing_of_entry({
        "Id": inspect["Id"],
        "Names": [inspect.get("Name") or ""],
        "Image": reference if reference_image_id == image_id or reference == image_id else image_id,
        "ImageID": image_id,
        "Created": parse_docker_time(inspect.get("Created")) // 1_000_000_000,
        "State": (inspect.get("State") or {}).get("Status") or "",
        "Labels": config.get("Labels"),
        "Mounts": inspect.get("Mounts"),
    })


def filter_key(filters: dict[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The same filters as a hashable value, however their values were spelled."""
    return tuple(sorted((name, (values,) if isinstance(values, str) else tuple(values))
                        for name, values in filters.items()))


def entry_filter(filters: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """Docker's list filter semantics for the filters in INDEXED_FILTERS, parsed once for a whole list."""
    wanted_labels: list[tuple[str, str, str]] = []
    ids: list[str] | None = None
    states: set[str] | None = None
    for key, values in filters.items():
        values = [values] if isinstance(values, str) else list(values)
        if key == "label":
            wanted_labels += [wanted.partition("=") for wanted in values]
        elif key == "id":
            ids = values
        elif key == "status":
            states = set(values)
        else:
            raise ValueError(f"filter {key!r} is not indexed")

    def accepts(entry: dict[str, Any]) -> bool:
        if states is not None and entry.get("State") not in states:
            return False
        if wanted_labels:
            entry_labels = entry.get("Labels") or {}
            for name, sep, value in wanted_labels:
                if name not in entry_labels or (sep and entry_labels[name] != value):
                    return False
        return ids is None or any(value in entry["Id"] for value in ids)

    return accepts


class ConvertedEntries(Generic[T]):
    """CRI messages made from Docker's answers about containers, kept while the index hands out the same one.

    The index replaces an entry (or inspect) object whenever the container changes, so the same
    object as last time converts to the same message: the kubelet's every-second relist and its
    status sweeps then cost no conversion for the pods that did not change. Callers must not
    modify the messages.
    """

    def __init__(self, convert: Callable[[dict[str, Any], Any], T]) -> None:
        self._convert = convert
        self._made: dict[str, tuple[dict[str, Any], Any, T]] = {}

    def get(self, entry: dict[str, Any], variant: Any = None) -> T:
        """The message of `entry`; `variant` (compared by ==) is whatever else the conversion reads."""
        made = self._made.get(entry["Id"])
        if made is not None and made[0] is entry and made[1] == variant:
            return made[2]
        message = self._convert(entry, variant)
        self._made[entry["Id"]] = (entry, variant, message)
        return message

    def keep_only(self, container_ids: set[str]) -> None:
        """Forget the containers a full list no longer shows."""
        for container_id in set(self._made) - container_ids:
            self._made.pop(container_id, None)

    def forget(self, container_id: str) -> None:
        self._made.pop(container_id, None)


class Subscription:
    """One GetContainerEvents caller; a caller that does not keep up is dropped, not waited for."""

    def __init__(self, hub: "EventHub") -> None:
        self._hub = hub
        # Unbounded underneath so that close() can always queue its end marker; offer() bounds it.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.dropped = False

    def offer(self, message: Any) -> None:
        if self._queue.qsize() >= SUBSCRIBER_QUEUE:
            self.dropped = True
            self.close()
            with contextlib.suppress(queue.Empty):  # what it will never read goes now, not when its call ends
                while self._queue.qsize() > 1:
                    self._queue.get_nowait()
            self._queue.put(None)  # a reader taking items meanwhile may have let the drain take close()'s
            return
        self._queue.put(message)

    def close(self) -> None:
        self._hub.unsubscribe(self)
        self._queue.put(None)

    def __iter__(self) -> Iterator[Any]:
        while True:
            message = self._queue.get()
            if message is None or self.dropped:
                return
            yield message


class Undescribed(Exception):
    """A change whose message cannot be made now (Docker does not answer): told again later."""


# Changes kept to be told again once Docker answers; the oldest go first past this many.
UNDESCRIBED_KEPT = 1024
# How soon a change that could not be described is tried again (a member's status Docker was slow
# to give), besides a reconnect's and the periodic resync's retelling.
UNDESCRIBED_RETRY_SECONDS = 2.0


class EventHub:
    """Turns each change into one message, as soon as it happens, and hands it to every subscriber.

    The message is built once, on the hub's own thread, while the change is fresh: built later by
    each reader, a quickly removed container would be missing from its own "started" event.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._changes: queue.SimpleQueue[ContainerChange | None] = queue.SimpleQueue()
        self._build: Callable[[ContainerChange], Any] | None = None
        self._undescribed: collections.deque[ContainerChange] = collections.deque(maxlen=UNDESCRIBED_KEPT)
        self._retry: threading.Timer | None = None

    def start(self, build: Callable[[ContainerChange], Any]) -> None:
        """Begin delivering; `build` makes a change's message (None: nothing to tell)."""
        self._build = build
        threading.Thread(target=self._deliver, name="container-events", daemon=True).start()

    def subscribe(self, limit: int | None = None) -> Subscription | None:
        """A new subscription; None when `limit` subscribers have one already."""
        subscription = Subscription(self)
        with self._lock:
            if limit is not None and len(self._subscribers) >= limit:
                return None
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, change: ContainerChange) -> None:
        if self._build is not None and self._subscribers:
            self._changes.put(change)

    def _deliver(self) -> None:
        while (change := self._changes.get()) is not None:
            with self._lock:
                subscribers = list(self._subscribers)
            if not subscribers or self._build is None:
                continue
            try:
                message = self._build(change)
            except Undescribed as exc:
                log.info("the %s event of container %s waits until Docker answers: %s", change.kind,
                         change.container_id[:12], exc)
                timer = None
                with self._lock:
                    self._undescribed.append(change)
                    if self._retry is None:
                        timer = self._retry = threading.Timer(UNDESCRIBED_RETRY_SECONDS, self._retry_undescribed)
                        timer.daemon = True
                if timer is not None:
                    timer.start()
                continue
            except Exception:  # one unreadable change must not end everyone's stream
                log.exception("cannot describe the %s event of container %s", change.kind, change.container_id)
                continue
            if message is not None:
                for subscription in subscribers:
                    subscription.offer(message)

    def _retry_undescribed(self) -> None:
        with self._lock:
            self._retry = None
        self.retell()

    def retell(self) -> None:
        """Deliver again the changes that could not be described (Docker answers again): the kubelet
        skips an event without the pod's status, and nothing else would tell it of that change."""
        with self._lock:
            changes, self._undescribed = list(self._undescribed), collections.deque(maxlen=UNDESCRIBED_KEPT)
        for change in changes:
            self._changes.put(change)

    def close_all(self) -> None:
        self._changes.put(None)
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.close()


class IndexedDockerClient(DockerClient):
    """A DockerClient whose container list and inspect answers come from the event-fed index."""

    def __init__(self, endpoint: str, timeout: float, pool_size: int = 32) -> None:
        super().__init__(endpoint, timeout, pool_size)
        self.events = EventHub()
        self._index_lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._entries_version = 0  # counts changes to _entries
        self._filtered_lists: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._filtered_version = 0  # the _entries_version the kept lists were made from
        self._inspects: dict[str, dict[str, Any]] = {}
        self._image_inspects: dict[str, dict[str, Any]] = {}  # by the reference asked for
        self._image_list: list[dict[str, Any]] | None = None
        self._image_generation = 0  # counts image events, so a fetch that raced one is not kept
        self._applied: dict[str, int] = {}  # id -> sequence number of the newest fetch applied
        self._dirty: dict[str, _Dirty] = {}  # containers an event named, not yet re-read as it said
        self._busy: collections.Counter[str] = collections.Counter()  # containers the shim is changing now
        self._sequence = itertools.count(1)
        # Fetches under way, by a sequence number drawn before any of theirs: the marks of removed
        # containers in _applied must outlive every fetch that began before the removal.
        self._fetches: collections.Counter[int] = collections.Counter()
        self._fresh = False
        self._outages = 0  # event stream outages so far: a list begun before one must not make the index fresh
        self._last_event_ns = 0  # Docker's time of the newest event the index has taken in
        # The last lifecycle change told to subscribers, by container: the second of two tellings of
        # one change (an event replayed after a reconnect, the resync's own account of it) is dropped.
        self._told: dict[str, str] = {}
        self._told_deleted: collections.deque[str] = collections.deque()
        self._stopping = threading.Event()
        self._dirty_signal = threading.Event()
        self._cancel_stream: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    # --- the index's life -----------------------------------------------------------------------

    @property
    def fresh(self) -> bool:
        return self._fresh

    def start_index(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="docker-events", daemon=True)
        self._thread.start()
        threading.Thread(target=self._resync_periodically, name="docker-resync", daemon=True).start()
        threading.Thread(target=self._refresh_when_dirty, name="docker-refresh", daemon=True).start()

    def stop_index(self) -> None:
        self._stopping.set()
        self._dirty_signal.set()
        self._fresh = False
        cancel = self._cancel_stream
        if cancel is not None:
            cancel()
        if self._thread is not None:  # a resync may wait on a hung Docker: the process exits anyway
            self._thread.join(timeout=STOP_JOIN_SECONDS)
        self.events.close_all()

    def _follow(self) -> None:
        backoff = 0.1
        reason = "start"
        while not self._stopping.is_set():
            since = time.time() - 1  # events from just before the list are replayed, none lost
            followed_at = None
            try:
                self.resync(reason)
                reason = "reconnect"
                followed_at = time.monotonic()
                self.follow_events(self._on_event, self._set_cancel, FOLLOWED_TYPES, FOLLOWED_ACTIONS, since=since)
                log.info("Docker's event stream ended; listing from Docker until it is back")
            except CRIError as exc:
                if not self._stopping.is_set():
                    log.info("Docker's event stream is down (%s); listing from Docker until it is back", exc.message)
            # Back to a quick retry only after a stream that stayed up a while: one that Docker refuses
            # at once (an authorization plugin's 403) while lists work made a full list ten times a second.
            if followed_at is not None and time.monotonic() - followed_at >= RECONNECT_MAX_SECONDS:
                backoff = 0.1
            self._fresh = False
            self._outages += 1
            with self._index_lock:
                self._inspects.clear()  # changes during the outage may show in an inspect alone
            self._forget_images()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    def _set_cancel(self, cancel: Callable[[], None]) -> bool:
        self._cancel_stream = cancel
        return not self._stopping.is_set()

    def _resync_periodically(self) -> None:
        """The safety net: a full list now and then, in case an event was ever missed."""
        while not self._stopping.wait(RESYNC_SECONDS):
            if self._fresh:
                try:
                    self.resync("periodic")
                except CRIError as exc:
                    log.info("periodic resync failed: %s", exc.message)

    def _refresh_when_dirty(self) -> None:
        delay = REFRESH_GATHER_SECONDS
        while not self._stopping.is_set():
            self._dirty_signal.wait()
            # A pod's changes come in bursts of events: gather them into one list call. A read
            # meanwhile re-reads what was marked since the last list, so waiting never serves a stale answer.
            self._stopping.wait(delay)
            self._dirty_signal.clear()
            if self._stopping.is_set():
                return
            try:
                self._reread_in_background()
            except CRIError as exc:
                # The marks stay, so reads go on asking Docker about those containers; the index
                # stays fresh (the event stream is up: marking it stale, nothing would undo that).
                delay = min(max(delay * 2, REREAD_RETRY_SECONDS), RECONNECT_MAX_SECONDS)
                log.info("re-reading changed containers failed (again in %.1fs): %s", delay, exc.message)
                self._dirty_signal.set()
                continue
            if self._dirty_signal.is_set():  # new events came meanwhile
                delay = REFRESH_GATHER_SECONDS
            elif self._dirty:  # only list entries that do not show their event yet: ask again later
                delay = min(delay * 2, SETTLE_RETRY_MAX_SECONDS)
                self._dirty_signal.set()
            else:
                delay = REFRESH_GATHER_SECONDS

    def resync(self, reason: str = "periodic") -> None:
        """Everything Docker lists, into the index; `reason` only counts it (start, reconnect, periodic,
        catch-up)."""
        outages = self._outages
        with self._fetch() as sequence:
            if not self._last_event_ns:  # events from before this list are in it
                self._last_event_ns = time.time_ns() - 1_000_000_000
            listed = {entry["Id"]: listing_of_entry(entry) for entry in super().list_containers({})}
            missed: list[ContainerChange] = []
            with self._index_lock:
                for container_id in set(self._entries) | set(listed):
                    if self._applied.get(container_id, 0) < sequence:
                        if reason in RESYNCS_THAT_TELL:
                            missed += changes_between(container_id, self._entries.get(container_id),
                                                      listed.get(container_id), time.time_ns())
                        self._store(container_id, listed.get(container_id), sequence, keep_inspect=True)
                # Containers gone before every fetch under way began need no guard against them any more.
                oldest = min(self._fetches)
                for container_id in [cid for cid, applied in self._applied.items()
                                     if applied < oldest and cid not in self._entries and cid not in self._dirty]:
                    del self._applied[container_id]
                # Those gone without a deletion told (this list is how the index learnt it) would
                # stay remembered for good; those told deleted stay in the bounded _told_deleted.
                for container_id in [cid for cid, kind in self._told.items()
                                     if kind != LIFECYCLE_ACTIONS["destroy"] and cid not in listed
                                     and cid not in self._entries and cid not in self._dirty
                                     and self._applied.get(cid, 0) <= sequence]:
                    del self._told[container_id]
                if self._outages == outages:  # no events were lost while it listed
                    self._fresh = True
        for change in missed:
            self._tell(change)
        self.events.retell()
        telemetry.INDEX_RESYNCS.labels(reason).inc()

    @contextlib.contextmanager
    def _fetch(self) -> Iterator[int]:
        """A sequence number older than any the fetches and stores inside draw, counted as under way."""
        with self._index_lock:
            sequence = next(self._sequence)
            self._fetches[sequence] += 1
        try:
            yield sequence
        finally:
            with self._index_lock:
                self._fetches[sequence] -= 1
                if not self._fetches[sequence]:
                    del self._fetches[sequence]

    def catch_up(self) -> None:
        """Take in the events Docker logged before now that the stream has not brought yet.

        A change made behind the shim's back reaches the stream milliseconds later; a call that
        must not miss a container (StopPodSandbox, RemovePodSandbox, which would leak it) asks for them first.
        """
        if not self._fresh:
            return  # every read goes to Docker meanwhile
        # Older events the stream has brought, whatever it took in last. So the question is short,
        # even where exec probes fill Docker's log, and only a log full of the last few seconds'
        # events (DOCKER_EVENTS_KEPT, of every kind) may have dropped a change the stream lacks.
        now = time.time()
        logged = self.past_events(since=max(self._last_event_ns / 1e9, now - STREAM_LAG_SECONDS), until=now)
        for event in logged:
            if event.get("Type") in FOLLOWED_TYPES:  # volumes have creates too
                self._index_event(event)
        if len(logged) >= DOCKER_EVENTS_KEPT:
            log.info("Docker logged %d events in the last %gs: listing everything", len(logged), STREAM_LAG_SECONDS)
            self.resync("catch-up")

    def _on_event(self, event: dict[str, Any]) -> None:
        change = self._index_event(event)
        if change is not None:
            self._tell(change)

    def _tell(self, change: ContainerChange) -> None:
        """Publish a lifecycle change unless it is the one last told of that container: a container
        cannot be created, started, stopped or deleted twice in a row, so that is a repeat."""
        with self._index_lock:
            if self._told.get(change.container_id) == change.kind:
                return
            self._told[change.container_id] = change.kind
            if change.kind == LIFECYCLE_ACTIONS["destroy"]:
                self._told_deleted.append(change.container_id)
                if len(self._told_deleted) > TOLD_DELETED_KEPT:
                    self._told.pop(self._told_deleted.popleft(), None)
        self.events.publish(change)

    def _index_event(self, event: dict[str, Any]) -> ContainerChange | None:
        """Mark what the event changed for re-reading; the lifecycle change it tells subscribers of.

        Taking in the same event twice (the stream's and catch_up's) changes nothing more.
        """
        self._last_event_ns = max(self._last_event_ns, int(event.get("timeNano") or 0))
        if event.get("Type") == "image":  # pulled, tagged, untagged, deleted, loaded: references may move
            self._forget_images()
            self._image_moved(event)
            return None
        if event.get("Type") == "network":
            self._network_changed(event)
            return None
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        action = (event.get("Action") or event.get("status") or "").split(":", 1)[0]
        if action == COMMIT_ACTION:
            self._forget_images()
            return None
        if not container_id or action not in CONTAINER_ACTIONS:
            return None
        expected = _EXPECTED_STATE.get(action)
        if action == "destroy":
            self._removed(container_id)
        with self._index_lock:
            if action != "create":  # an inspect says more than the list: re-ask after any other event
                self._inspects.pop(container_id, None)  # (IDs are never reused: any inspect kept is newer)
            # The shim re-reads after its own changes (or lists their outcome), so Docker's echo
            # of them usually finds the list entry already as the event says: no need to ask
            # again, even while the refresher has yet to confirm an earlier mark.
            mark = self._dirty.get(container_id)
            known = (mark is None or mark.reread) and expected is not None and expected(
                self._entries.get(container_id))
            # A create says only that the container exists. A mark before it is the shim's own
            # create (or this event taken in before), whose re-read began once Docker had made it.
            known = known or (action == "create" and mark is not None)
        if not known:
            self._mark_dirty(container_id, expected or _any_state)
            self._dirty_signal.set()  # the refresher re-reads in batches; the stream never waits for it
        if action not in LIFECYCLE_ACTIONS:
            return None
        return ContainerChange(
            container_id=container_id,
            kind=LIFECYCLE_ACTIONS[action],
            attributes=(event.get("Actor") or {}).get("Attributes") or {},
            at_ns=int(event.get("timeNano") or time.time_ns()),
        )

    def _image_moved(self, event: dict[str, Any]) -> None:
        """Re-list the containers of an image whose name moved: Docker lists a container's image by
        the name it was made from while that name points at its image, and by the image's ID once
        it does not. The event names the image (by ID, or by the reference pulled) and the name."""
        actor = event.get("Actor") or {}
        named = {actor.get("ID") or event.get("id") or "", (actor.get("Attributes") or {}).get("name") or ""} - {""}
        references = {_comparable_reference(name) for name in named}  # `busybox:1.0` names docker.io/library/busybox:1.0
        with self._index_lock:
            moved = [container_id for container_id, entry in self._entries.items()
                     if entry.get("ImageID") in named or _comparable_reference(entry.get("Image") or "") in references]
            for container_id in moved:
                mark = self._dirty.get(container_id)
                self._dirty[container_id] = (
                    dataclasses.replace(mark, marked=next(self._sequence), reread=False) if mark is not None
                    else _Dirty(next(self._sequence), _any_state, time.monotonic() + SETTLE_SECONDS))
        if moved:
            self._dirty_signal.set()

    def _network_changed(self, event: dict[str, Any]) -> None:
        """Re-read a container that joined or left a network, unless a re-read of it is coming anyway:
        Docker connects a container as it starts it and disconnects it as it stops, after or
        before the lifecycle event whose mark (stricter than this one) must stay."""
        container_id = ((event.get("Actor") or {}).get("Attributes") or {}).get("container")
        action = event.get("Action") or event.get("status")
        if not container_id or action not in NETWORK_ACTIONS:
            return  # a network's own create or destroy
        with self._index_lock:
            self._inspects.pop(container_id, None)
            if container_id not in self._entries or container_id in self._busy:
                return
            mark = self._dirty.get(container_id)
            if mark is not None:  # newer than a re-read under way, whose inspect may predate the change
                self._dirty[container_id] = dataclasses.replace(mark, marked=next(self._sequence))
                return
            # Lists need no re-read (their entries hold no addresses): only the refresher's inspect.
            self._dirty[container_id] = _Dirty(next(self._sequence), _any_state,
                                               time.monotonic() + SETTLE_SECONDS, reread=True)
        self._dirty_signal.set()

    def _mark_dirty(self, container_id: str, settled: Callable[[dict[str, Any] | None], bool]) -> None:
        with self._index_lock:
            self._dirty[container_id] = _Dirty(next(self._sequence), settled, time.monotonic() + SETTLE_SECONDS)

    def _reread_listed(self) -> None:
        """For a read: every dirty container in one list call, which dockerd answers without waiting
        on a container busy starting or stopping (an inspect waits for it)."""
        with self._index_lock:
            dirty = dict(self._dirty)
        if dirty:
            with self._fetch():
                self._apply(dirty, self._listed(dirty))

    def _reread_in_background(self) -> None:
        """The refresher's re-read: by inspect, which answers for the list entry and the status calls
        after a change alike; a burst by one list call. Containers the shim is changing are left
        for when it is done, which marks them again."""
        with self._index_lock:
            dirty = {container_id: mark for container_id, mark in self._dirty.items() if container_id not in self._busy}
        if not dirty:
            return
        with self._fetch():
            if len(dirty) > INSPECTED_REFRESH_MAX:
                self._apply(dirty, self._listed(dirty))
            else:
                self._apply(dirty, {container_id: self._inspect_listing(container_id) for container_id in dirty})

    def _listed(self, dirty: dict[str, _Dirty]) -> dict[str, tuple[int, dict[str, Any] | None, None]]:
        sequence = next(self._sequence)
        listed = {entry["Id"]: listing_of_entry(entry) for entry in super().list_containers({"id": list(dirty)})}
        return {container_id: (sequence, listed.get(container_id), None) for container_id in dirty}

    def _apply(self, dirty: dict[str, _Dirty],
               fetched: Mapping[str, tuple[int, dict[str, Any] | None, dict[str, Any] | None]]) -> None:
        """Store what was fetched (unless a newer fetch was) and clear the marks it settles.

        Fetches need no lock among themselves: each carries a sequence number, and a mark made
        after the fetch began (a newer event) stays; one made before it, as Docker's echo of the
        shim's own create often is, the fetch answers too.
        """
        now = time.monotonic()
        with self._index_lock:
            for container_id, asked in dirty.items():
                sequence, entry, inspect = fetched[container_id]
                if self._applied.get(container_id, 0) < sequence:
                    self._store(container_id, entry, sequence)
                mark = self._dirty.get(container_id)
                if mark is None or (mark is not asked and mark.marked > sequence):
                    continue  # settled meanwhile, or marked again since this fetch began
                # By what the index now holds: a newer fetch's entry, when that one was stored instead.
                if mark.settled(self._entries.get(container_id)) or now > mark.give_up_at:
                    del self._dirty[container_id]
                    if inspect is not None and self._applied.get(container_id) == sequence:
                        self._inspects[container_id] = inspect  # the status calls after a change ask it
                elif not mark.reread:
                    self._dirty[container_id] = dataclasses.replace(mark, reread=True)

    def _inspect_listing(self, container_id: str) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None]:
        """(sequence, list entry, inspect) of a container as it is now; entry None when it is gone."""
        sequence = next(self._sequence)
        try:
            inspect = super().inspect_container(container_id)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return sequence, None, None
        reference = (inspect.get("Config") or {}).get("Image") or ""
        return sequence, listing_of_inspect(inspect, self._image_id_of(reference)), inspect

    def _image_id_of(self, reference: str) -> str | None:
        try:
            return self.inspect_image(reference).get("Id") if reference else None
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    def _removed(self, container_id: str) -> None:
        """Docker removed the container: no need to ask, an ID is never used again."""
        with self._index_lock:
            self._store(container_id, None, next(self._sequence))
            self._dirty.pop(container_id, None)

    def _store(self, container_id: str, entry: dict[str, Any] | None, sequence: int,
               keep_inspect: bool = False) -> None:
        """Record a fresh list entry; an unchanged one keeps its old object, so conversions cached by it hold.

        Only a resync of an unchanged container keeps its inspect: an event or the shim's own
        change can alter what inspect says (resources, health) and leave the list entry as it was.
        """
        self._applied[container_id] = sequence
        if entry is None:
            if self._entries.pop(container_id, None) is not None:
                self._entries_version += 1
            self._inspects.pop(container_id, None)
            return
        if self._entries.get(container_id) != entry:
            self._entries[container_id] = entry
            self._entries_version += 1
        elif keep_inspect:
            return
        self._inspects.pop(container_id, None)

    def _changed_by_shim(self, container_id: str, action: str) -> None:
        """After the shim's own change: the next read re-reads it, batched with whatever else changed,
        unless the outcome of the call says what Docker now shows."""
        if not self._fresh:
            return
        if action == "destroy":
            self._removed(container_id)
        elif not self._record_outcome(container_id, action):
            self._mark_dirty(container_id, _EXPECTED_STATE.get(action, _any_state))

    def _record_outcome(self, container_id: str, action: str) -> bool:
        """A start or stop the shim made, into the index as it returned; False when it cannot be told.

        A churning node's relists would otherwise each wait for a Docker list call (Docker's own
        list shows a stop some hundred ms after it returned). The refresher still confirms the
        state by inspect, and an event that disagrees (an exit during the start) leaves the
        container to be re-read as before.
        """
        with self._index_lock:
            entry = self._entries.get(container_id)
            state = _STATE_AFTER_SHIM.get(action, {}).get(entry.get("State", "")) if entry is not None else None
            if entry is None or state is None:
                return False
            outcome = {**entry, "State": state}
            mark = self._dirty.get(container_id)
            if mark is not None and not mark.settled(outcome):
                return False
            self._store(container_id, outcome, next(self._sequence))
            self._dirty[container_id] = _Dirty(next(self._sequence), _EXPECTED_STATE[action],
                                               time.monotonic() + SETTLE_SECONDS, reread=True)
        self._dirty_signal.set()
        return True

    # --- reads --------------------------------------------------------------------------------

    def list_containers(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        if self._fresh and set(filters) <= INDEXED_FILTERS:
            if self._needs_reread():
                self._reread_listed()
            with self._index_lock:
                if self._fresh:
                    return list(self._filtered(filters))
        return super().list_containers(filters)

    def _needs_reread(self) -> bool:
        """A mark no read has re-read yet, unless it is a lifecycle event of a container a call of
        the shim is changing now: a read beside that call may answer as before it, and the call
        leaves its outcome in the index (or the mark, when they disagree)."""
        with self._index_lock:
            return any(not mark.reread and (container_id not in self._busy or mark.settled is _any_state)
                       for container_id, mark in self._dirty.items())

    def _filtered(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """The entries `filters` accepts, kept until the index changes (call with the index lock held).

        The kubelet relists with the same two filters every second, mostly while nothing changed:
        scanning every container for each was a third of what a relist cost the shim at 110 pods.
        """
        if self._filtered_version != self._entries_version or len(self._filtered_lists) >= FILTERED_LISTS_KEPT:
            self._filtered_lists.clear()
            self._filtered_version = self._entries_version
        key = filter_key(filters)
        kept = self._filtered_lists.get(key)
        if kept is None:
            kept = self._filtered_lists[key] = list(filter(entry_filter(filters), self._entries.values()))
        return kept

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        mark = self._dirty.get(container_id) if self._fresh else None
        if mark is not None:  # changed: ask Docker, and let the index have the answer too
            inspect = self._reread(container_id, mark)
            if inspect is not None:
                return inspect
        if self._fresh and container_id in self._entries and container_id not in self._dirty:
            with self._index_lock:
                cached = self._inspects.get(container_id)
            if cached is not None:
                return cached
            sequence = next(self._sequence)
            inspect = super().inspect_container(container_id)
            with self._index_lock:
                if self._applied.get(container_id, 0) < sequence and container_id not in self._dirty:
                    self._inspects[container_id] = inspect
            return inspect
        return super().inspect_container(container_id)

    def _reread(self, container_id: str, mark: _Dirty) -> dict[str, Any] | None:
        """Inspect a marked container into the index; its inspect, None when it is gone."""
        with self._fetch():
            fetched = self._inspect_listing(container_id)
            self._apply({container_id: mark}, {container_id: fetched})
        return fetched[2]

    def inspect_image(self, reference: str, kept: bool = True) -> dict[str, Any]:
        """Image inspects are kept until any image event: creating a pod's containers asks for the same few."""
        if not kept or not self._fresh:
            return super().inspect_image(reference)
        with self._index_lock:
            cached = self._image_inspects.get(reference)
            generation = self._image_generation
        if cached is not None:
            return cached
        inspect = super().inspect_image(reference)
        with self._index_lock:
            if generation == self._image_generation and self._fresh:
                if len(self._image_inspects) >= IMAGE_INSPECTS_KEPT:
                    self._image_inspects.clear()
                self._image_inspects[reference] = inspect
        return inspect

    def images(self) -> list[dict[str, Any]]:
        """The image list is kept until any image event, as image inspects are; callers must not change it."""
        if not self._fresh:
            return super().images()
        with self._index_lock:
            cached, generation = self._image_list, self._image_generation
        if cached is not None:
            return cached
        listed = super().images()
        with self._index_lock:
            if generation == self._image_generation and self._fresh:
                self._image_list = listed
        return listed

    def _forget_images(self) -> None:
        with self._index_lock:
            self._image_generation += 1
            self._image_inspects.clear()
            self._image_list = None

    # --- the shim's own changes ---------------------------------------------------------------

    def pull_image(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().pull_image(*args, **kwargs)
        finally:
            self._forget_images()  # before the call returns: the image's event may come later

    def remove_image(self, reference: str) -> None:
        try:
            super().remove_image(reference)
        finally:
            self._forget_images()

    def _changing(self, container_id: str, action: str, change: Callable[[], None]) -> None:
        """Make `change`, then have the container re-read: as the action says it must be, or as it is."""
        outcome = "failed"
        with self._index_lock:
            self._busy[container_id] += 1
        try:
            change()
            outcome = action
        finally:
            with self._index_lock:
                self._busy[container_id] -= 1
                if not self._busy[container_id]:
                    del self._busy[container_id]
            self._changed_by_shim(container_id, outcome)

    def create_container(self, name: str, body: dict[str, Any]) -> str:
        """Create, then inspect the new container into the index before the call returns: the relist
        after CreateContainer or RunPodSandbox needs no Docker round trip then, and the StartContainer
        after it finds the inspect kept (the refresher would have made the same request)."""
        container_id = super().create_container(name, body)
        self._changed_by_shim(container_id, "create")
        mark = self._dirty.get(container_id) if self._fresh else None
        if mark is not None:
            try:
                self._reread(container_id, mark)
            except CRIError as exc:  # created all the same: the refresher tries again
                log.debug("re-reading new container %s failed: %s", container_id[:12], exc.message)
        return container_id

    def start_container(self, container_id: str) -> None:
        self._changing(container_id, "start", lambda: super(IndexedDockerClient, self).start_container(container_id))

    def stop_container(self, container_id: str, grace_seconds: int) -> None:
        self._changing(
            container_id, "die",
            lambda: super(IndexedDockerClient, self).stop_container(container_id, grace_seconds),
        )

    def remove_container(self, container_id: str, force: bool = True) -> None:
        self._changing(
            container_id, "destroy", lambda: super(IndexedDockerClient, self).remove_container(container_id, force)
        )

    def update_container(self, container_id: str, resources: dict[str, Any]) -> None:
        self._changing(
            container_id, "update", lambda: super(IndexedDockerClient, self).update_container(container_id, resources)
        )


@functools.lru_cache(maxsize=1024)  # a node's containers use few image names: parsed once each, not per event
def _comparable_reference(name: str) -> str:
    """A name as Docker resolves it (fully qualified, `:latest` when untagged); an ID as it is."""
    if not name or image_reference.is_image_id(name):
        return name
    try:
        return image_reference.normalize(name)
    except CRIError:
        return name


_EVENT_TYPES = {
    "created": "CONTAINER_CREATED_EVENT",
    "started": "CONTAINER_STARTED_EVENT",
    "stopped": "CONTAINER_STOPPED_EVENT",
    "deleted": "CONTAINER_DELETED_EVENT",
}


class ContainerEvents:
    """GetContainerEvents: each lifecycle change of a pod's sandbox or container, with the pod's state."""

    def __init__(self, hub: EventHub, sandboxes: "SandboxService", containers: "ContainerService",
                 max_subscribers: int = 8) -> None:
        """`max_subscribers`: each stream holds a gRPC worker for its life; with every worker held,
        Status and the rest would wait (the kubelet's evented PLEG needs one)."""
        self._hub = hub
        self._sandboxes = sandboxes
        self._containers = containers
        self._max_subscribers = max_subscribers
        hub.start(self._response)

    def follow(self, register_cancel: Callable[[Callable[[], None]], bool]) -> Iterator[api.ContainerEventResponse]:
        subscription = self._hub.subscribe(self._max_subscribers)
        if subscription is None:
            raise CRIError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"GetContainerEvents: {self._max_subscribers} subscribers already (each holds one of the "
                f"shim's gRPC workers: raise --grpc-workers for more)",
            )
        if not register_cancel(subscription.close):  # cancelled while it waited for a worker
            subscription.close()
        yield from subscription
        if subscription.dropped:
            raise CRIError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"GetContainerEvents: this subscriber fell {SUBSCRIBER_QUEUE} events behind and was dropped; "
                f"relist and subscribe again",
            )

    def _response(self, change: ContainerChange) -> api.ContainerEventResponse | None:
        kind = change.attributes.get(labels.CONTAINER_TYPE_LABEL)
        if kind == labels.CONTAINER_TYPE_SANDBOX:
            sandbox_id = change.container_id
        elif kind == labels.CONTAINER_TYPE_CONTAINER:
            sandbox_id = change.attributes.get(labels.SANDBOX_ID_LABEL, "")
        else:
            return None  # not a CRI object
        response = api.ContainerEventResponse(
            container_id=change.container_id,
            container_event_type=api.ContainerEventType.Value(_EVENT_TYPES[change.kind]),
            created_at=change.at_ns,
        )
        status: api.PodSandboxStatus | None = None
        try:
            status, _ = self._sandboxes.status(sandbox_id, verbose=False)
        except CRIError as exc:
            _undescribed_if_docker_is_down(exc)
        if status is None or not status.metadata.uid:
            # Gone, or only its checkpoint left, which knows no pod UID (the kubelet finds the pod by
            # it): its own deletion still tells whose it was (containerd tells it first).
            status = self._sandboxes.removed_status(sandbox_id, change.attributes) \
                if sandbox_id == change.container_id else None
        if status is not None:
            response.pod_sandbox_status.CopyFrom(status)
        try:
            response.containers_statuses.extend(self._containers.statuses_of_pod(sandbox_id))
        except CRIError as exc:  # told later: a member left out is one the kubelet would make again
            raise Undescribed(exc.message) from exc
        return response


def _undescribed_if_docker_is_down(error: CRIError) -> None:
    """A status Docker did not give (stopping, restarting, too busy) is not one that is gone."""
    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        raise Undescribed(error.message) from error
