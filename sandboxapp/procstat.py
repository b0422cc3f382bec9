"""Process identities from /proc (nothing but `os` imported: prestart.py uses it too)."""

from __future__ import annotations


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22): with
    the pid, an identity that a reused pid does not share."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            stat = stream.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(")") + 2:].split()[19])
