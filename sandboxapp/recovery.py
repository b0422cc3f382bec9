"""Undoing what a launch holds: used at every normal exit, and for launches that crashed."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from sandboxapp import x11
from sandboxapp.audio import SoundServerAddress, unload_socket_module
from sandboxapp.display import Display
from sandboxapp.errors import SandboxError
from sandboxapp.layer import remove_layer
from sandboxapp.ledger import Record, RunDir, is_alive

SOUND_CONF = "client.conf"
SOUND_SOCKET = "native"


def remove_sound_dir(directory: Path) -> None:
    for name in (SOUND_CONF, SOUND_SOCKET):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
    with contextlib.suppress(FileNotFoundError, OSError):
        directory.rmdir()


def undo_entry(entry: dict[str, Any], *, recovering: bool) -> None:
    """Undo one ledger entry. Each undo copes with a thing that was never fully made."""
    import psutil  # off the launch path: only needed here

    kind = entry["kind"]
    if kind == "container":
        # nspawn runs with a parent-death signal, so this finds something only when that
        # failed; its container's processes die with it.
        if is_alive(entry.get("pid"), entry.get("started")):
            with contextlib.suppress(psutil.Error):
                psutil.Process(entry["pid"]).send_signal(signal.SIGKILL)
                psutil.Process(entry["pid"]).wait(timeout=10)
    elif kind == "layer":
        remove_layer(Path(entry["path"]), kill_leftovers=recovering)
    elif kind == "x11":
        access = x11.XAccess(Display(int(entry["display"])), entry.get("xauthority"))
        x11.revoke(access, int(entry["uid"]))
    elif kind == "sound":
        if entry.get("index") is not None:
            unload_socket_module(SoundServerAddress(Path(entry["server"])), int(entry["index"]),
                                 Path(entry["socket"]))
        remove_sound_dir(Path(entry["dir"]))
    else:
        raise SandboxError(f"unknown ledger entry kind {kind!r}")


def undo_record(record: Record, *, recovering: bool) -> list[str]:
    """Undo every entry, newest first; entries that fail stay recorded for a later try."""
    problems: list[str] = []
    for entry in reversed(list(record.entries)):
        try:
            undo_entry(entry, recovering=recovering)
        except SandboxError as exc:
            problems.append(f"{record.profile}: could not undo {entry['kind']}: {exc.message}")
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
            kinds = ", ".join(entry["kind"] for entry in fresh.entries) or "nothing"
            problems = undo_record(fresh, recovering=True)
            messages.append(f"cleaned up after {fresh.profile} (launcher pid {fresh.pid} is gone):"
                            f" {kinds}")
            messages.extend(problems)
    return messages
