"""Undoing what a launch holds: used at every normal exit, and for launches that crashed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from sandboxapp.errors import SandboxError
from sandboxapp.fs import nofollow
from sandboxapp.host import x11, x11auth
from sandboxapp.host.display import Display
from sandboxapp.host.sound import SOUND_CONF, SOUND_SOCKET, SoundServerAddress, unload_socket_module
from sandboxapp.image.uidrange import BLOCK_SIZE
from sandboxapp.launch.layer import remove_layer
from sandboxapp.launch.ledger import Record, RunDir, is_alive


def remove_sound_dir(directory: Path) -> None:
    for name in (SOUND_CONF, SOUND_SOCKET):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
    with contextlib.suppress(FileNotFoundError, OSError):
        directory.rmdir()


def processes_in_block(base: int) -> list[int]:
    """Live processes running as a UID of the block that starts at base: a container's, since
    the block belongs to one image and no host account. Zombies are dead already."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            uid = int(fields["Uid"].split()[0])
            zombie = fields["State"].split()[0] == "Z"
        except (OSError, KeyError, IndexError, ValueError):
            continue
        if base <= uid < base + BLOCK_SIZE and not zombie:
            found.append(int(name))
    return found


def kill_block(base: int, timeout: float = 10.0) -> None:
    """SIGKILL every process of the UID block, and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while pids := processes_in_block(base):
        if time.monotonic() > deadline:
            raise SandboxError(f"processes {', '.join(map(str, pids))} of UID block {base} "
                               "did not die")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def undo_entry(entry: dict[str, Any], *, recovering: bool) -> None:
    """Undo one ledger entry. Each undo copes with a thing that was never fully made."""
    kind = entry["kind"]
    if kind == "container":
        # nspawn runs with a parent-death signal, so this finds something only when that
        # failed; its container's processes die with it.
        if is_alive(entry.get("pid"), entry.get("started")):
            import psutil  # off the launch path: only needed here

            with contextlib.suppress(psutil.Error):
                psutil.Process(entry["pid"]).send_signal(signal.SIGKILL)
                psutil.Process(entry["pid"]).wait(timeout=10)
        # After a crash, whatever still runs in the image's UID block is the container's
        # (its launcher's profile lock, which the caller holds, keeps any other out).
        if recovering and isinstance(entry.get("uid"), int):
            kill_block(entry["uid"])
    elif kind == "layer":
        remove_layer(Path(entry["path"]), kill_leftovers=recovering)
    elif kind == "x11":
        access = x11.XAccess(Display(int(entry["display"])), entry.get("xauthority"))
        x11.revoke(access, int(entry["uid"]))
    elif kind == "x11-auth":
        if entry.get("authid") is not None:
            server = entry.get("server")
            x11auth.revoke(x11.XAccess(Display(int(entry["display"])), entry.get("xauthority")),
                           int(entry["authid"]), tuple(server) if server else None)
        nofollow.remove_user_dir(str(entry["dir"]), int(entry["user"]), (x11auth.AUTH_FILE,))
    elif kind == "sound":
        index = entry.get("index")
        if index is not None or recovering:
            # Without an index, a crashed launch may still have loaded it: look for it.
            unload_socket_module(SoundServerAddress(Path(entry["server"])),
                                 None if index is None else int(index), Path(entry["socket"]))
        remove_sound_dir(Path(entry["dir"]))
    elif kind == "empty-dir":
        nofollow.remove_empty_dir(str(entry["path"]), int(entry["user"]))
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
