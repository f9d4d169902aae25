"""An image's users and groups, and the Docker user and groups each SupplementalGroupsPolicy needs."""

from __future__ import annotations

import pytest

from dockershim_py import security_context as sc
from dockershim_py.api import api_pb2 as api
from dockershim_py.image_accounts import (
    ACCOUNT_FILES_LABEL, Account, Accounts, Group, ImageAccounts, parse_group, parse_passwd,
)

PASSWD = """root:x:0:0:root:/root:/bin/sh
broken line
nobody:x:65534:65534:nobody:/:/bin/false
default-user:x:1000:1000::/home/default-user:/bin/sh
twin:x:1000:1001::/:/bin/sh
super:x:²:1::/:/bin/sh
"""
GROUP = """root:x:0:
default-user:x:1000:
group-defined-in-image:x:50000:default-user, other
wheel:x:10:root
bad:x:notanumber:default-user
"""
ACCOUNTS = Accounts(users=parse_passwd(PASSWD), groups=parse_group(GROUP))


def test_passwd_and_group_files_are_read_as_libc_reads_them() -> None:
    assert ACCOUNTS.users[2] == Account(name="default-user", uid=1000, gid=1000)
    assert len(ACCOUNTS.users) == 4
    assert Group(name="group-defined-in-image", gid=50000, members=("default-user", "other")) in ACCOUNTS.groups
    assert ACCOUNTS.user("1000").name == "default-user"  # the first entry of a uid
    assert ACCOUNTS.user("twin").gid == 1001
    assert ACCOUNTS.user("4242") is None and ACCOUNTS.user("ghost") is None and ACCOUNTS.user("²") is None
    assert ACCOUNTS.groups_of("default-user") == [50000]


def never_read() -> Accounts:
    raise AssertionError("the image's accounts were read where Docker alone gives the right groups")


@pytest.mark.parametrize("user", ["1000", "default-user", "", "1000:50"])
def test_merge_without_a_group_and_strict_with_one_are_docker_as_it_is(user: str) -> None:
    policy = api.Strict if ":" in user else api.Merge
    assert sc.groups_by_policy(user, ["1234"], policy, never_read) == (user, ["1234"])


@pytest.mark.parametrize(("user", "expected"), [
    ("1000", "1000:1000"),  # the primary group from /etc/passwd: Docker then adds none of the image's
    ("default-user", "default-user:1000"),
    ("", "0:0"),  # root, as the image's default user
    ("4242", "4242:0"),  # a uid the image does not know: group 0, as runc gives it
    ("ghost", "ghost"),  # an unknown name: Docker refuses the start itself
])
def test_strict_names_the_primary_group_so_docker_adds_none_from_the_image(user: str, expected: str) -> None:
    assert sc.groups_by_policy(user, ["1234"], api.Strict, lambda: ACCOUNTS) == (expected, ["1234"])


@pytest.mark.parametrize(("user", "expected"), [
    ("1000:1000", ["1234", "50000"]),
    ("default-user:1000", ["1234", "50000"]),
    ("0:0", ["1234", "10"]),
    ("4242:0", ["1234"]),
])
def test_merge_with_a_group_adds_the_images_memberships_docker_would_drop(user: str, expected: list[str]) -> None:
    assert sc.groups_by_policy(user, ["1234"], api.Merge, lambda: ACCOUNTS) == (user, expected)


def test_merge_lists_a_group_asked_for_and_in_the_image_once() -> None:
    assert sc.groups_by_policy("1000:1000", ["50000"], api.Merge, lambda: ACCOUNTS) == ("1000:1000", ["50000"])


class FakeDocker:
    """Docker's side of reading an image's accounts: a container made, two files read, removed."""

    def __init__(self, files: dict[str, bytes | None]) -> None:
        self.files = files
        self.created: list[dict] = []
        self.removed: list[str] = []

    def create_container(self, name: str, body: dict) -> str:
        self.created.append(body)
        return f"probe-{len(self.created)}"

    def read_container_file(self, container_id: str, path: str, limit: int) -> bytes | None:
        return self.files[path]

    def remove_container(self, container_id: str, force: bool = True) -> None:
        self.removed.append(container_id)


def test_an_images_accounts_are_read_once_from_a_container_never_started() -> None:
    docker = FakeDocker({"/etc/passwd": PASSWD.encode(), "/etc/group": None})
    accounts = ImageAccounts(docker)
    first = accounts.of("sha256:abc")
    assert accounts.of("sha256:abc") is first
    assert first.user("1000").gid == 1000 and first.groups == ()  # no /etc/group: no memberships
    assert len(docker.created) == 1 and docker.removed == ["probe-1"]
    # A crash's leftover is found by it; typed as no CRI object, whatever the image's labels say.
    assert docker.created[0]["Labels"] == {ACCOUNT_FILES_LABEL: "true", "io.kubernetes.docker.type": ""}


def test_the_probe_container_is_removed_when_reading_fails() -> None:
    docker = FakeDocker({})
    with pytest.raises(KeyError):
        ImageAccounts(docker).of("sha256:abc")
    assert docker.removed == ["probe-1"]
