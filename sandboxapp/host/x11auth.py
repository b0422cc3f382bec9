"""The isolated X display grant: an untrusted authorization of the SECURITY extension.

A client that connects with it is *untrusted*: the X server keeps it from the trusted clients'
windows (no reading their input or pixels), from XTEST and from most extensions, while it
draws, maps and takes input for windows of its own. Revoking the authorization closes every
client connected with it at once, and refuses new ones; a timeout makes it lapse by itself once
its last client is gone, should the launcher die before it can revoke it.

Made with python-xlib over the user's own (trusted) connection to the display.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.host import unixsocket
from sandboxapp.host.display import AUTH_FILE, XAccess
from sandboxapp.system.procstat import start_ticks

if TYPE_CHECKING:
    from Xlib.display import Display as XDisplay

COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
# libXau's FamilyWild: the entry matches any host, as it must in a container whose host name is
# not the host's.
FAMILY_WILD = 0xFFFF
# Seconds the authorization outlives its last client (or, unused, its making). It is revoked
# at exit; this only bounds how long one left by a killed launcher lasts. An app must connect to
# the display within this time of its start, and may be away from it no longer.
TIMEOUT = 300
# The authorization file inside the sandbox's X directory, and where the sandbox sees it.


@dataclass(frozen=True)
class Authorization:
    authid: int
    cookie: bytes
    # The X server process that holds it (pid, start): an authorization lives in its server,
    # so a display served by any other process holds nothing of ours.
    server: tuple[int, int] | None


def xauthority_entry(display_number: int, cookie: bytes) -> bytes:
    """One Xauthority record: any host, this display, an MIT-MAGIC-COOKIE-1."""

    def field(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    return (struct.pack(">H", FAMILY_WILD) + field(b"") + field(str(display_number).encode())
            + field(COOKIE_NAME) + field(cookie))


def _server_of(display: XDisplay) -> tuple[int, int] | None:
    """The process at the other end of the display connection (the kernel says who)."""
    sock = display.display.socket
    try:
        pid, _, _ = struct.unpack("=iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("=iII")))
    except (OSError, struct.error):
        return None
    started = start_ticks(pid) if pid > 0 else None
    return (pid, started) if started is not None else None


@contextlib.contextmanager
def connection(access: XAccess) -> Iterator[XDisplay]:
    """The user's own connection to the display, with the user's cookie. Every read has
    unixsocket's patience: a server that stops answering is an error, not a hang."""
    from Xlib import error
    from Xlib.display import Display

    cookie_file = access.cookie_file()
    previous = os.environ.get("XAUTHORITY"), socket.getdefaulttimeout()
    try:
        # python-xlib reads the cookie file named in the environment, and makes its socket
        # with the default timeout.
        if cookie_file is not None:
            os.environ["XAUTHORITY"] = str(cookie_file)
        socket.setdefaulttimeout(unixsocket.TIMEOUT)
        display = Display(access.display.name)
    except (error.DisplayError, error.XauthError, error.ConnectionClosedError, OSError) as exc:
        raise SandboxError(
            f"cannot open the X display {access.display.name}: {exc}",
            hint="check DISPLAY and XAUTHORITY: they must name your running X session",
            status=ExitStatus.LAUNCHER) from None
    finally:
        if previous[0] is None:
            os.environ.pop("XAUTHORITY", None)
        else:
            os.environ["XAUTHORITY"] = previous[0]
        socket.setdefaulttimeout(previous[1])
    try:
        yield display
    except (error.XError, error.ConnectionClosedError, OSError) as exc:
        raise SandboxError(f"the X display {access.display.name} failed: {exc}",
                           status=ExitStatus.LAUNCHER) from None
    finally:
        with contextlib.suppress(Exception):
            display.close()


def _require_security(display: XDisplay, access: XAccess) -> None:
    if not display.has_extension("SECURITY"):
        raise SandboxError(
            f"the X display {access.display.name} has no SECURITY extension: a sandbox cannot "
            "be kept from the other programs on it",
            hint='set x11 = "trusted" in the profile\'s [sandbox] to let it in as a trusted '
                 "client (it can then read and type into every window)",
            status=ExitStatus.LAUNCHER)


def check_security(access: XAccess) -> None:
    """Raise the one-line error a launch gives where the display cannot isolate a sandbox."""
    with connection(access) as display:
        _require_security(display, access)


def generate(display: XDisplay, access: XAccess) -> Authorization:
    """A new untrusted authorization, over the user's connection `display`."""
    from Xlib.ext import security

    _require_security(display, access)
    reply: Any = display.security_generate_authorization(
        COOKIE_NAME.decode(), timeout=TIMEOUT, trust_level=security.SecurityClientUntrusted)
    return Authorization(int(reply.authid), bytes(reply.auth_data_return), _server_of(display))


def revoke_on(display: XDisplay, authid: int) -> None:
    """Revoke it over the connection that made it (the launch keeps that one open), which
    disconnects its clients."""
    from Xlib import error

    display.security_revoke_authorization(authid)
    try:
        display.sync()  # a round trip: the request is done, or its error raised
    except error.XError:
        return  # BadAuthorization: it lapsed (its timeout) or was revoked already


def revoke(access: XAccess, authid: int, server: tuple[int, int] | None) -> None:
    """Revoke it over a new connection (after a crash). Where the display is served by
    another process than the one that made it (the server ended: its authorizations with it),
    there is nothing to revoke, and nothing is asked of that process."""
    if server is None or start_ticks(server[0]) != server[1]:
        return
    with connection(access) as display:
        if _server_of(display) != server:
            return
        _require_security(display, access)
        revoke_on(display, authid)


def write_file(directory: Path, display_number: int, cookie: bytes) -> Path:
    """The sandbox's Xauthority file, readable by its owner only."""
    path = directory / AUTH_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(xauthority_entry(display_number, cookie))
    return path
