"""ULIDs: the 26-character, time-prefixed ids Sinch uses for apps, messages and nonces.

A ULID is 128 bits written in Crockford base32 (no I, L, O, U): 48 bits of milliseconds since
the Unix epoch, then 80 random bits. Decoding the time prefix of Sinch's own example ids gives
exactly the example's ``accepted_time`` (reference section 8), so we generate ids the same way.
Ids from one process sort by creation time to the millisecond; within a millisecond the order is
random, which is fine for ids that are only ever compared for equality.
"""

from __future__ import annotations

import os
import re
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_DECODE = {c: i for i, c in enumerate(CROCKFORD)}
_MAX_MS = (1 << 48) - 1


def new_ulid(now: float | None = None) -> str:
    """A fresh ULID; ``now`` (epoch seconds) sets the time prefix, default the wall clock."""
    ms = int((time.time() if now is None else now) * 1000)
    if not 0 <= ms <= _MAX_MS:
        raise ValueError("time is outside the ULID range")
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(value: str) -> bool:
    return bool(ULID_RE.match(value))


def ulid_time(value: str) -> float:
    """The creation time (epoch seconds) encoded in a ULID's first ten characters."""
    if not is_ulid(value):
        raise ValueError("not a ULID")
    ms = 0
    for char in value[:10]:
        ms = (ms << 5) | _DECODE[char]
    return ms / 1000
