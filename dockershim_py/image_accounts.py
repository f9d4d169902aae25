"""The users and groups an image defines (/etc/passwd, /etc/group), for SupplementalGroupsPolicy
and the identity ContainerStatus reports (the one the process starts with).

Docker adds the image's groups of the user only when the user names no group (`1000`, not
`1000:1000`). So Merge with run_as_group must add those memberships itself, and Strict without
run_as_group must name the user's primary group, which only the image's /etc/passwd knows.
Both files are read once per image, from a container created for the purpose and never started.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from dataclasses import dataclass

from . import labels
from .docker_client import DockerClient
from .errors import CRIError
from .security_context import is_number

log = logging.getLogger(__name__)

ACCOUNT_FILES_LABEL = "io.kubernetes.dockershim-py.account-files"
ACCOUNT_FILE_MAX_BYTES = 1 << 20  # an /etc/passwd of thousands of users is a few hundred KiB
IMAGES_KEPT = 64  # images are immutable by ID: a kept answer never goes stale


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Accounts:
    """An image's users and groups, matched as runc matches them."""

    users: tuple[Account, ...] = ()
    groups: tuple[Group, ...] = ()

    def user(self, name_or_uid: str) -> Account | None:
        """The first entry of a numeric uid, or of a name (runc does not mix the two)."""
        if is_number(name_or_uid):
            return next((user for user in self.users if user.uid == int(name_or_uid)), None)
        return next((user for user in self.users if user.name == name_or_uid), None)

    def groups_of(self, user_name: str) -> list[int]:
        """The gids of the groups that list `user_name` as a member."""
        return [group.gid for group in self.groups if user_name in group.members]


def parse_passwd(text: str) -> tuple[Account, ...]:
    """`name:password:uid:gid:...` lines; malformed ones are skipped, as libc skips them."""
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] and is_number(fields[2]) and is_number(fields[3]):
            users.append(Account(name=fields[0], uid=int(fields[2]), gid=int(fields[3])))
    return tuple(users)


def parse_group(text: str) -> tuple[Group, ...]:
    """`name:password:gid:member,member` lines; malformed ones are skipped."""
    groups = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] and is_number(fields[2]):
            members = tuple(member.strip() for member in fields[3].split(",") if member.strip())
            groups.append(Group(name=fields[0], gid=int(fields[2]), members=members))
    return tuple(groups)


class ImageAccounts:
    """The accounts of images, read from Docker once per image ID."""

    def __init__(self, docker: DockerClient) -> None:
        self._docker = docker
        self._lock = threading.Lock()
        self._kept: collections.OrderedDict[str, Accounts] = collections.OrderedDict()
        self._reading: dict[str, threading.Lock] = {}

    def of(self, image_id: str) -> Accounts:
        """The image's accounts (empty when it has no /etc/passwd or /etc/group)."""
        with self._lock:
            if image_id in self._kept:
                self._kept.move_to_end(image_id)
                return self._kept[image_id]
            reading = self._reading.setdefault(image_id, threading.Lock())
        with reading:  # one read per image, however many containers are created from it at once
            with self._lock:
                kept = self._kept.get(image_id)
            if kept is not None:
                return kept
            try:
                kept = self._read(image_id)
                with self._lock:
                    self._kept[image_id] = kept
                    while len(self._kept) > IMAGES_KEPT:
                        self._kept.popitem(last=False)
            finally:
                with self._lock:
                    self._reading.pop(image_id, None)
        return kept

    def _read(self, image_id: str) -> Accounts:
        name = f"dockershim-py-accounts-{image_id.removeprefix('sha256:')[:12]}-{secrets.token_hex(4)}"
        body = {"Image": image_id, "Entrypoint": ["/dockershim-py-accounts"], "Labels": labels.helper_labels(ACCOUNT_FILES_LABEL),
                "NetworkDisabled": True, "HostConfig": {"NetworkMode": "none"}}
        container_id = self._docker.create_container(name, body)
        try:
            passwd = self._docker.read_container_file(container_id, "/etc/passwd", ACCOUNT_FILE_MAX_BYTES)
            group = self._docker.read_container_file(container_id, "/etc/group", ACCOUNT_FILE_MAX_BYTES)
        finally:
            try:
                self._docker.remove_container(container_id, force=True)
            except CRIError as exc:  # labelled: the next shim start removes it
                log.warning("could not remove account-files container %s: %s", container_id[:12], exc.message)
        return Accounts(users=parse_passwd((passwd or b"").decode("utf-8", errors="replace")),
                        groups=parse_group((group or b"").decode("utf-8", errors="replace")))
