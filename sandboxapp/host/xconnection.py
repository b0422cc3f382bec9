"""The launcher's own connection to an X server (python-xlib), with a cookie file of its
choosing: the user's display, or a sandbox's nested one (host/nested.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.safepath import DesktopUser, write_user_file
from sandboxapp.host import unixsocket
from sandboxapp.host.display import AUTH_FILE, XAccess

if TYPE_CHECKING:
    from Xlib.display import Display as XDisplay

COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
# libXau's FamilyWild: the entry matches any host, as it must in a container whose host name is
# not the host's.
FAMILY_WILD = 0xFFFF
# libXau's FamilyLocal: the entry python-xlib (the launcher's own connection) looks for.
FAMILY_LOCAL = 256


def cookie_entries(cookie: bytes, hostname: bytes) -> bytes:
    """A sandbox's Xauthority file: the cookie for any display number, for any host (libXau,
    inside the container, whose host name is not the host's) and for this host (python-xlib,
    which knows no wildcard)."""

    def field(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    return b"".join(struct.pack(">H", family) + field(address) + field(b"") + field(COOKIE_NAME)
                    + field(cookie) for family, address in ((FAMILY_WILD, b""),
                                                            (FAMILY_LOCAL, hostname)))


def write_cookie_file(directory: Path, cookie: bytes, user: DesktopUser) -> Path:
    """The sandbox's Xauthority file in its X directory (user's own, 0700), readable by its
    owner only, the user (also where root writes it for them)."""
    return write_user_file(directory, AUTH_FILE,
                           cookie_entries(cookie, socket.gethostname().encode()), user, 0o600)


# What python-xlib raises where a server's words are not the protocol (a server that is not
# one, or not well): the display's error, not a traceback.
_MALFORMED = (struct.error, ValueError, IndexError, KeyError)

_TABLES = threading.Lock()


def own_tables(make: Any, name: str) -> XDisplay:
    """A python-xlib Display with tables of its own: its extensions' major opcodes, and their
    event and error classes. python-xlib keeps these on its class, shared by every connection,
    and fills them in with each server's extensions: beside a second server whose extensions
    sit at other codes (a nested server beside the user's), requests would go to the wrong
    extension and events be read as the wrong kind."""
    from Xlib import error
    from Xlib.protocol import display as protocol
    from Xlib.protocol import event

    names = ("extension_major_opcodes", "event_classes", "error_classes")
    with _TABLES:
        shared = [getattr(protocol.Display, attribute) for attribute in names]
        protocol.Display.extension_major_opcodes = {}
        protocol.Display.event_classes = event.event_class.copy()
        protocol.Display.error_classes = error.xerror_class.copy()
        try:
            display = make(name)
            for attribute in names:
                setattr(display.display, attribute, getattr(protocol.Display, attribute))
            # An event of an extension's sub-kind python-xlib has no class for (one a client
            # forged and sent us) is read as any event, not a KeyError out of its reader.
            for table in display.display.event_classes.values():
                if type(table) is dict:
                    for subcode in range(256):
                        table.setdefault(subcode, event.AnyEvent)
        finally:
            # Other connections (made elsewhere) keep the class's tables as they were.
            for attribute, table in zip(names, shared, strict=True):
                setattr(protocol.Display, attribute, table)
    return display


@contextlib.contextmanager
def connection(access: XAccess) -> Iterator[XDisplay]:
    """A connection to the display access names, with its cookie file (the user's, or a
    nested server's). Every read has unixsocket's patience: a server that stops answering is
    an error, not a hang."""
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
        display = own_tables(Display, access.display.name)
    except (error.DisplayError, error.XauthError, error.ConnectionClosedError, OSError,
            *_MALFORMED) as exc:
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
    except (error.XError, error.ConnectionClosedError, OSError, *_MALFORMED) as exc:
        raise SandboxError(f"the X display {access.display.name} failed: {exc}",
                           status=ExitStatus.LAUNCHER) from None
    finally:
        with contextlib.suppress(Exception):
            display.close()
