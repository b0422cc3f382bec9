"""Each image gets its own block of 65536 host UIDs and GIDs, for the life of the image.

Ownership is shifted into the block once, when the image is built, so a launch needs no chown
and no ID-mapped mount of the image (measured: 56 ms a launch against 467 ms). The block is
chosen from the profile name (the same profile gets the same block when rebuilt) and never
shared: two profiles sharing a block would share an X grant.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from sandboxapp.errors import SandboxError

BLOCK_SIZE = 0x10000
# Above systemd's range for `--private-users=pick` (0x00080000-0x6FFFFFFF), below its
# "foreign" range at 0x7FFE0000 and below 2^31, which some tools treat as negative.
FIRST_BASE = 0x70000000
END = 0x7FFE0000
SLOTS = (END - FIRST_BASE) // BLOCK_SIZE


@dataclass(frozen=True)
class UidRange:
    base: int
    count: int = BLOCK_SIZE

    @property
    def last(self) -> int:
        return self.base + self.count - 1

    def __str__(self) -> str:
        return f"{self.base}-{self.last}"


def preferred_slot(profile_name: str) -> int:
    import hashlib  # only image builds pick a block: launches need not load OpenSSL

    digest = hashlib.sha256(profile_name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % SLOTS


def ids_in_use_on_host() -> set[int]:
    """UIDs and GIDs of the host's accounts that fall into our region."""
    ids = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    return {i for i in ids if FIRST_BASE <= i < END}


def allocate(profile_name: str, taken_bases: Iterable[int]) -> UidRange:
    """The block for profile_name: its preferred slot, or the next free one after it."""
    taken = set(taken_bases)
    host_ids = ids_in_use_on_host()
    start = preferred_slot(profile_name)
    for step in range(SLOTS):
        base = FIRST_BASE + ((start + step) % SLOTS) * BLOCK_SIZE
        if base in taken:
            continue
        if any(base <= i < base + BLOCK_SIZE for i in host_ids):
            continue
        return UidRange(base)
    raise SandboxError(f"no free UID block is left for {profile_name!r} among {SLOTS} blocks")
