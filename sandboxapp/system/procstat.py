"""Process identities from /proc."""

from __future__ import annotations


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (the state) on; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            stat = stream.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return stat[stat.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22): with
    the pid, an identity that a reused pid does not share."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(pid: object, started: object) -> bool:
    """The process pid exists and is the one that started at `started` (not a reused pid)."""
    if not isinstance(pid, int) or not isinstance(started, (int, float)):
        return False
    return start_ticks(pid) == started


def session_of(pid: int) -> int | None:
    """The process's session id (field 6), as a pid of the reader's PID namespace."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[3])


def namespace_pid(pid: int) -> int | None:
    """The pid the process has in its own (innermost) PID namespace."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None

