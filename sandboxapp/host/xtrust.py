"""x11 = "trusted": a trusted authorization of the sandbox's own on the user's display (the
SECURITY extension's GenerateAuthorization), never a host-list entry.

A host-list entry admits a UID, and every user's sandbox of one image runs in the same UID
block: another user's sandbox with network = "host" would get in through the display's
abstract socket. An authorization admits who holds its cookie: this sandbox, whose X directory
alone has it. Revoking it closes every client connected with it and refuses new ones; a timeout
makes it lapse by itself once its last client is gone, should the launcher die before it can
revoke it.

Xwayland has no SECURITY extension (Debian builds it without): there is no cookie of the
sandbox's own to give, and a trusted sandbox is refused there.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.host.display import XAccess
from sandboxapp.host.xconnection import COOKIE_NAME, connection
from sandboxapp.system.procstat import start_ticks

if TYPE_CHECKING:
    from Xlib.display import Display as XDisplay

# Seconds the authorization outlives its last client (or, unused, its making). It is revoked
# at exit; this only bounds how long one left by a killed launcher lasts. The app must connect
# to the display within this time of its start, and may be away from it no longer.
TIMEOUT = 300


@dataclass(frozen=True)
class Authorization:
    authid: int
    cookie: bytes
    # The X server process that holds it (pid, start ticks): an authorization lives in its
    # server, so a display served by any other process holds nothing of ours.
    server: tuple[int, int] | None


def _server_of(display: XDisplay) -> tuple[int, int] | None:
    """The process at the other end of the display connection (the kernel says who)."""
    sock = display.display.socket
    try:
        pid, _, _ = struct.unpack("=iII", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("=iII")))
    except (OSError, struct.error):
        return None
    started = start_ticks(pid) if pid > 0 else None
    return (pid, started) if started is not None else None


def _require_security(display: XDisplay, access: XAccess) -> None:
    if not display.has_extension("SECURITY"):
        raise SandboxError(
            f'x11 = "trusted" needs an authorization of the sandbox\'s own, and the X display '
            f"{access.display.name} has no SECURITY extension to make one (Xwayland has none)",
            hint="set x11 = true in the profile's [sandbox]: the sandbox gets an X server of "
                 "its own in a window on your display",
            status=ExitStatus.LAUNCHER)


def check_possible(access: XAccess) -> None:
    """Before anything is built or started: the display can give a trusted authorization."""
    with connection(access) as display:
        _require_security(display, access)


def generate(access: XAccess) -> Authorization:
    """A new trusted authorization on the user's display, made over the user's connection."""
    from Xlib.ext import security

    with connection(access) as display:
        _require_security(display, access)
        reply: Any = display.security_generate_authorization(
            COOKIE_NAME.decode(), timeout=TIMEOUT, trust_level=security.SecurityClientTrusted)
        return Authorization(int(reply.authid), bytes(reply.auth_data_return),
                             _server_of(display))


def revoke(access: XAccess, authid: int, server: tuple[int, int] | None) -> None:
    """Revoke it, which disconnects its clients. Where the display is served by another process
    than the one that made it (that server ended, its authorizations with it), there is nothing
    to revoke, and nothing is asked of that process."""
    if server is None or start_ticks(server[0]) != server[1]:
        return
    with connection(access) as display:
        if _server_of(display) != server:
            return
        _require_security(display, access)
        # A BadAuthorization says it lapsed (its timeout) or was revoked already: nothing to
        # do, and nothing to print.
        display.set_error_handler(lambda *_: None)
        display.security_revoke_authorization(authid)
        display.sync()  # a round trip: the request is done before we go
