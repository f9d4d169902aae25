"""Image references as the container ecosystem writes them, parsed and normalised without I/O.

Docker and the kubelet share one grammar (`[domain[:port]/]path[:tag][@digest]`); a name without a
domain lives on docker.io, and a one-part docker.io name under `library/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import invalid_argument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
# The one old name of docker.io that Docker (distribution/reference) rewrites.
_LEGACY_DOMAIN = "index.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_IMAGE_ID_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{64}$")
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class ImageReference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def registry(self) -> str:
        return self.domain

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_image_id(text: str) -> bool:
    """A full image ID, with or without its `sha256:` prefix."""
    return bool(_IMAGE_ID_RE.match(text))


def parse(text: str) -> ImageReference:
    """Parse and normalise a reference; INVALID_ARGUMENT with the reason when it is malformed."""
    if not text or not text.strip():
        raise invalid_argument("image reference is empty")
    if text != text.strip():
        raise invalid_argument(f"invalid image reference {text!r}: surrounding whitespace")
    remainder, digest = text, ""
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise invalid_argument(f"invalid image reference {text!r}: malformed digest {digest!r}")
    tag = ""
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG_RE.match(tag):
            raise invalid_argument(f"invalid image reference {text!r}: malformed tag {tag!r}")
    if not remainder:
        raise invalid_argument(f"invalid image reference {text!r}: no repository name")
    first, _, rest = remainder.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not _DOMAIN_RE.match(domain):
            raise invalid_argument(f"invalid image reference {text!r}: malformed registry {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, remainder
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not _PATH_RE.match(path):
        if _PATH_RE.match(path.lower()):
            raise invalid_argument(f"invalid image reference {text!r}: repository names must be lowercase")
        raise invalid_argument(f"invalid image reference {text!r}: malformed repository name {path!r}")
    if len(domain) + 1 + len(path) > _MAX_NAME_LENGTH:
        raise invalid_argument(f"invalid image reference {text!r}: name longer than {_MAX_NAME_LENGTH}")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return ImageReference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(text: str) -> str:
    """The fully qualified form of a reference, for comparing names that Docker shortens."""
    return str(parse(text))
