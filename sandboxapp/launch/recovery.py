"""Undoing what a launch holds: used at every normal exit, and for launches that crashed."""

from __future__ import annotations

import contextlib

from sandboxapp.undo.entries import kind_of, try_undo
from sandboxapp.undo.ledger import Record, RunDir


def undo_record(record: Record, *, recovering: bool) -> list[str]:
    """Undo every entry, newest first; entries that fail stay recorded for a later try."""
    problems: list[str] = []
    for entry in reversed(list(record.entries)):
        problem = try_undo(entry, recovering=recovering)
        if problem is not None:
            problems.append(f"{record.profile}: could not undo {kind_of(entry)}: {problem}")
            continue
        record.drop(entry)
    if not record.entries:
        record.delete()
    return problems


def reconcile(run_dir: RunDir, *, holding: str | None = None) -> list[str]:
    """Clean up after launchers that died without cleaning up. `holding`: the profile whose
    lock the caller already holds. Returns one line per thing done or not doable."""
    messages: list[str] = []
    for record in run_dir.records():
        if record.launcher_alive:
            continue
        if record.profile == holding:
            lock = contextlib.nullcontext(True)
        else:
            lock = run_dir.profile_lock(record.profile)  # type: ignore[assignment]
        with lock as held:
            if not held:
                continue  # a live launcher of that profile owns it now
            fresh = Record.load(record.path)
            if fresh is None or fresh.launcher_alive:
                continue
            kinds = ", ".join(kind_of(entry) for entry in fresh.entries) or "nothing"
            problems = undo_record(fresh, recovering=True)
            messages.append(f"cleaned up after {fresh.profile} (launcher pid {fresh.pid} is gone):"
                            f" {kinds}")
            messages.extend(problems)
    return messages
