"""Docker's RFC 3339 timestamps as the nanoseconds since the epoch that CRI replies carry.

Docker writes nanosecond precision (`2024-05-01T10:20:30.123456789Z`); Python's datetime keeps
only microseconds, so the fraction is parsed apart.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)
# Docker's zero time: a container that never started or never finished.
ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_docker_time(text: str | None) -> int:
    """Nanoseconds since the epoch; 0 for Docker's zero time, an empty or an unreadable value."""
    if not text or text == ZERO_TIME:
        return 0
    match = _RFC3339.match(text)
    if match is None:
        return 0
    seconds, fraction, zone = match.groups()
    offset = "+00:00" if zone == "Z" else zone
    moment = datetime.fromisoformat(seconds + offset)
    if moment.year <= 1:
        return 0
    nanos = int((fraction or "0").ljust(9, "0"))
    return int(moment.replace(tzinfo=moment.tzinfo or timezone.utc).timestamp()) * 1_000_000_000 + nanos
