"""What sandboxapp knows about Debian's archive layout."""

from __future__ import annotations

from pathlib import Path

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Suites that have no -updates and no -security companion.
ROLLING_SUITES = frozenset({"sid", "unstable", "experimental", "rc-buggy"})


def mirror_from_sources(sources_list: str) -> str | None:
    """The archive URL in the sources.list that debootstrap wrote into a new tree."""
    for line in sources_list.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "deb" and not words[1].startswith("["):
            return words[1]
    return None


def security_mirror(mirror: str) -> str | None:
    """The security archive beside a mirror laid out as Debian's own (…/debian ->
    …/debian-security); None where that cannot be told (a local or differently laid out one)."""
    if mirror.startswith("file:"):
        return None
    base = mirror.rstrip("/")
    return base + "-security" if base.endswith("/debian") else None


def sources_list(suite: str, mirror: str, security: str | None) -> str:
    lines = [f"deb {mirror} {suite} main"]
    if suite not in ROLLING_SUITES:
        lines.append(f"deb {mirror} {suite}-updates main")
        if security is not None:
            lines.append(f"deb {security} {suite}-security main")
    return "\n".join(lines) + "\n"

