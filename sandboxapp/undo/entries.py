"""The kinds of thing a launch record lists, each with its own undo.

An entry is written before its thing is made and dropped once that is undone; its undo copes
with a thing that was never (fully) made, and `recovering` says it runs after a crash, for a
launcher that is gone. The JSON form ("kind" and the fields) is the records' on-disk format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sandboxapp.errors import SandboxError
from sandboxapp.fs import nofollow
from sandboxapp.host.display import AUTH_FILE, Display, XAccess
from sandboxapp.host.portal import PORTAL_SOCKET
from sandboxapp.host.sessionmanager import SESSION_SOCKET
from sandboxapp.host.sound import SOUND_CONF, SOUND_SOCKET
from sandboxapp.host.wayland import SANDBOX_SOCKET
from sandboxapp.system.layer import remove_layer
from sandboxapp.system.procstat import is_alive


@dataclass
class Entry:
    KIND: ClassVar[str] = ""
    id: int = dataclasses.field(default=0, kw_only=True)

    def undo(self, *, recovering: bool) -> None:
        raise NotImplementedError

    def grant_line(self) -> str | None:
        """What `ps` says of it, when it is a grant to the sandbox."""
        return None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"id": data.pop("id"), "kind": self.KIND, **data}


@dataclass
class ContainerEntry(Entry):
    KIND: ClassVar[str] = "container"
    machine: str
    uid: int  # the first host UID of the image's block
    user: int  # the desktop user it runs for
    profile_file: str
    pid: int | None = None  # what the launcher spawned (unshare), once it runs
    started: float | None = None

    def undo(self, *, recovering: bool) -> None:
        # nspawn runs with a parent-death signal, so this finds something only when that
        # failed; the kernel ends its PID namespace, and the container in it, with it. A
        # launcher killed before that signal was set leaves unshare and nspawn running on its
        # layer, which the layer's own undo ends (layer.kill_processes_in). Not the image's
        # whole UID block: another user's sandbox of the same image runs in it too, under a
        # lock and a record of its own.
        if self.pid is not None and is_alive(self.pid, self.started):
            import psutil  # off the launch path: only needed here

            with contextlib.suppress(psutil.Error):
                process = psutil.Process(self.pid)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)


@dataclass
class LayerEntry(Entry):
    KIND: ClassVar[str] = "layer"
    path: str

    def undo(self, *, recovering: bool) -> None:
        remove_layer(Path(self.path), kill_leftovers=recovering)


@dataclass
class TrustedX11Entry(Entry):
    """x11 = "trusted": a trusted authorization of the sandbox's own on the user's display
    (host/xtrust.py; authid None until it is made), the server process that holds it, and the
    user's directory holding its Xauthority file."""

    KIND: ClassVar[str] = "x11"
    dir: str
    user: int
    display: int
    xauthority: str | None
    authid: int | None = None
    server: list[int] | None = None

    def undo(self, *, recovering: bool) -> None:
        # Root cleaning up after a user's launch that died does not talk to the display, a
        # server the user may run: the authorization lapses by itself (its timeout) once its
        # last client, gone with the container, has left.
        by_root = recovering and os.geteuid() == 0 and self.user != 0
        if self.authid is not None and not by_root:
            from sandboxapp.host import xtrust  # the X clients load only when there is one

            xtrust.revoke(XAccess(Display(self.display), self.xauthority), self.authid,
                          (self.server[0], self.server[1]) if self.server else None)
        nofollow.remove_user_dir(self.dir, self.user, (AUTH_FILE,))

    def grant_line(self) -> str:
        return f"x11 :{self.display} an authorization of its own (trusted)"


@dataclass
class NestedX11Entry(Entry):
    """x11 = true: the sandbox's own X server (host/nested.py), the process (pid, start ticks;
    None until it started) and the user's directory holding its Xauthority file."""

    KIND: ClassVar[str] = "x11-nested"
    dir: str
    user: int
    display: int | None = None
    server: list[int] | None = None

    def undo(self, *, recovering: bool) -> None:
        # A launcher that is gone took its server with it (its parent-death signal); should it
        # still run, it is ended here, and only if it is the very process that was recorded.
        if self.server is not None and is_alive(self.server[0], self.server[1]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.server[0], signal.SIGTERM)
        nofollow.remove_user_dir(self.dir, self.user, (AUTH_FILE,))

    def grant_line(self) -> str:
        return f"x11 :{self.display} a display of its own (Xephyr)" if self.display else (
            "x11 a display of its own (Xephyr), starting")


@dataclass
class SoundEntry(Entry):
    """The sandbox's sound directory, its socket served by the launcher."""

    KIND: ClassVar[str] = "sound"
    socket: str
    dir: str
    user: int

    def undo(self, *, recovering: bool) -> None:
        # The user's directory: never followed through a symlink they put in its place.
        nofollow.remove_user_dir(self.dir, self.user, (SOUND_CONF, SOUND_SOCKET))

    def grant_line(self) -> str:
        return f"sound {self.socket}"


@dataclass
class UserSocketEntry(Entry):
    """A directory of the user's holding one socket the launcher made for the sandbox."""

    SOCKET: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""
    dir: str
    user: int

    def undo(self, *, recovering: bool) -> None:
        nofollow.remove_user_dir(self.dir, self.user, (self.SOCKET,))

    def grant_line(self) -> str:
        return f"{self.WHAT} {self.dir}/{self.SOCKET}"


@dataclass
class SessionManagerEntry(UserSocketEntry):
    """The sandbox's session manager socket, served by the launcher (host/sessionmanager.py)."""

    KIND: ClassVar[str] = "session-manager"
    SOCKET: ClassVar[str] = SESSION_SOCKET
    WHAT: ClassVar[str] = "session manager"


@dataclass
class WaylandSocketEntry(UserSocketEntry):
    """The sandbox's Wayland socket, registered with the user's compositor as a sandbox's
    (host/wayland.py); the compositor stops taking connections there when the launcher's
    descriptor for it closes (with the launcher, at the latest)."""

    KIND: ClassVar[str] = "wayland"
    SOCKET: ClassVar[str] = SANDBOX_SOCKET
    WHAT: ClassVar[str] = "Wayland socket"


@dataclass
class PortalEntry(UserSocketEntry):
    """The directory where the sandbox's bus makes the socket the launcher serves its file
    chooser through (features/portal.py)."""

    KIND: ClassVar[str] = "portal"
    SOCKET: ClassVar[str] = PORTAL_SOCKET
    WHAT: ClassVar[str] = "file chooser"

    def undo(self, *, recovering: bool) -> None:
        # The sandbox may write there: whatever it left goes too.
        if not nofollow.clear_user_dir(self.dir, self.user):
            raise SandboxError(f"could not remove {self.dir} and what the sandbox left in it")


@dataclass
class UnknownEntry(Entry):
    """An entry this release cannot read: it stays recorded, and is reported."""

    kind: str
    data: dict[str, Any]

    def undo(self, *, recovering: bool) -> None:
        raise SandboxError(f"unknown ledger entry kind {self.kind!r}")

    def to_json(self) -> dict[str, Any]:
        return {**self.data, "id": self.id, "kind": self.kind}


KINDS: dict[str, type[Entry]] = {
    cls.KIND: cls for cls in (ContainerEntry, LayerEntry, TrustedX11Entry, NestedX11Entry,
                              SoundEntry, SessionManagerEntry, WaylandSocketEntry, PortalEntry)
}


def kind_of(entry: Entry) -> str:
    return entry.kind if isinstance(entry, UnknownEntry) else entry.KIND


def try_undo(entry: Entry, *, recovering: bool) -> str | None:
    """Undo entry: None once done, else why not (it stays recorded, for a later try).
    Whatever an undo raises is caught: one that fails must stop neither the others nor, by
    failing again, every later launch and cleanup."""
    try:
        entry.undo(recovering=recovering)
    except SandboxError as exc:
        return exc.message
    except Exception as exc:  # a bug, or what a sandbox left: said, and kept for cleanup
        return f"{type(exc).__name__}: {exc}"
    return None


def entry_from_json(data: dict[str, Any]) -> Entry:
    """An entry as a record lists it; one that is not what its kind says is an UnknownEntry,
    kept for a later release (or a person) to deal with."""
    kind = str(data.get("kind"))
    cls = KINDS.get(kind)
    fields = {k: v for k, v in data.items() if k != "kind"}
    entry_id = int(data["id"]) if isinstance(data.get("id"), int) else 0
    if cls is not None:
        with contextlib.suppress(TypeError, ValueError):
            entry = cls(**fields)
            if _types_fit(entry):
                return entry
    return UnknownEntry(kind, fields, id=entry_id)


def _types_fit(entry: Entry) -> bool:
    """The fields hold what their annotations say (a record is a file: it may be damaged)."""
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        wanted = str(field.type)
        if value is None and "None" in wanted:
            continue
        if wanted.startswith("int") and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if wanted.startswith("str") and not isinstance(value, str):
            return False
        if wanted.startswith("float") and not isinstance(value, (int, float)):
            return False
        if wanted.startswith("list") and not (isinstance(value, list) and len(value) == 2
                                              and all(isinstance(v, int) for v in value)):
            return False
    return True
