"""The X display grant: one server-interpreted host entry for exactly one host UID.

This is `xhost +si:localuser:#UID`, made over the user's own X connection with python-xlib:
the X server then admits a local client only when the kernel says it runs as that UID, and
nothing else is widened (never `+local:` or `+`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sandboxapp.display import Display
from sandboxapp.errors import ExitStatus, SandboxError

FAMILY_SERVER_INTERPRETED = 5
HOST_INSERT = 0
HOST_DELETE = 1


def host_entry(uid: int) -> bytes:
    return b"localuser\0#" + str(uid).encode()


@dataclass(frozen=True)
class XAccess:
    """How to reach the user's X server: the display and the cookie file the user has."""

    display: Display
    xauthority: str | None

    def to_record(self) -> dict[str, object]:
        return {"display": self.display.number, "xauthority": self.xauthority}

    @classmethod
    def from_environment(cls, display: Display, environ: Mapping[str, str]) -> XAccess:
        return cls(display, environ.get("XAUTHORITY") or None)


@contextlib.contextmanager
def _connection(access: XAccess) -> Iterator[Any]:
    """A bare protocol connection: it authenticates with the user's cookie like any client,
    but skips the extension set-up of Xlib.display.Display, which a launch does not need."""
    from Xlib import error as xerror

    # The display class below Xlib.display.Display: the protocol and its resource classes,
    # without the round trips that set up every extension the server has.
    from Xlib.display import _BaseDisplay as ProtocolDisplay

    # python-xlib reads the cookie file named by XAUTHORITY (or ~/.Xauthority).
    saved = os.environ.get("XAUTHORITY")
    if access.xauthority:
        os.environ["XAUTHORITY"] = access.xauthority
    try:
        try:
            connection = ProtocolDisplay(f":{access.display.number}")
        except (xerror.DisplayError, xerror.ConnectionClosedError, xerror.XError,
                OSError) as exc:
            raise SandboxError(
                f"cannot open the X display :{access.display.number}: {exc}",
                hint="check DISPLAY and XAUTHORITY: they must name your running X session",
                status=ExitStatus.LAUNCHER,
            ) from None
    finally:
        if access.xauthority:
            if saved is None:
                os.environ.pop("XAUTHORITY", None)
            else:
                os.environ["XAUTHORITY"] = saved
    try:
        yield connection
    finally:
        connection.close()


def _host_list(connection: Any) -> Any:
    from Xlib.protocol import request

    return request.ListHosts(display=connection)


def _entries(connection: Any) -> set[bytes]:
    return {
        bytes(host.name)
        for host in _host_list(connection).hosts
        if host.family == FAMILY_SERVER_INTERPRETED
    }


def _change(connection: Any, mode: int, uid: int) -> None:
    from Xlib.protocol import request

    request.ChangeHosts(display=connection, onerror=None, mode=mode,
                        host_family=FAMILY_SERVER_INTERPRETED, host=host_entry(uid))


def grant(access: XAccess, uid: int) -> bool:
    """Admit uid; False when the entry was there already (the user's own: leave it at exit)."""
    with _connection(access) as connection:
        if host_entry(uid) in _entries(connection):
            return False
        _change(connection, HOST_INSERT, uid)
        # The host list is read again: a round trip that also shows the grant took.
        if host_entry(uid) not in _entries(connection):
            raise SandboxError(f"the X server did not take the grant for UID {uid}",
                               status=ExitStatus.LAUNCHER)
        return True


def revoke(access: XAccess, uid: int) -> None:
    with _connection(access) as connection:
        if host_entry(uid) in _entries(connection):
            _change(connection, HOST_DELETE, uid)
            _host_list(connection)  # a round trip, so the request is done before we go


def admits_everyone_local(access: XAccess) -> bool:
    """True when the server lets every local user in (`xhost +local:` or access control off)."""
    from Xlib import X

    with _connection(access) as connection:
        reply = _host_list(connection)
        if reply.mode == X.DisableAccess:
            return True
        return any(host.family == 252 for host in reply.hosts)  # FamilyLocalHost
