"""The file chooser portal of a sandbox's own session bus, served by the launcher: the
sandbox's programs ask it, as they ask xdg-desktop-portal on a desktop, for a file to open or
a place to save; the dialog is the user's (host/chooser.py), and the files the user chose are
bound into the sandbox, they alone (system/handed.py), before the answer names them.

Everything the sandbox sends here is hostile: a request's options are read by their types and
sizes, and only those this portal knows count; one dialog is open at a time; a request that
comes while the user is elsewhere (the sandbox's window does not have the focus, where the
display path can tell) is refused, never shown over what the user is doing.

The launcher is a client of the sandbox's bus through a socket the bus makes in a directory of
the user's (features/portal.py), which is opened without following symlinks, and must be a
socket: the sandbox cannot send the launcher to another bus. dbus-fast speaks D-Bus, in an
asyncio loop on a thread of its own; the dialogs and the binding of files, which block, run
on threads of an executor of the portal's own, which the launch's end waits for once it has
closed the dialogs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from sandboxapp.errors import SandboxError
from sandboxapp.host.chooser import FILE_CHOOSER, PORTAL, PORTAL_PATH, Choice

# The socket the sandbox's bus makes, for the launcher, in the directory features/portal.py
# binds.
PORTAL_SOCKET = "bus"
REQUEST_INTERFACE = "org.freedesktop.portal.Request"
PROPERTIES = "org.freedesktop.DBus.Properties"
VERSION = 3
TOKEN = re.compile(r"[A-Za-z0-9_]{1,64}")
# A client's unique name as a bus daemon gives it; the sandbox's daemon may say anything.
UNIQUE_NAME = re.compile(r":[0-9]{1,10}\.[0-9]{1,10}")
MAX_TITLE = 200
MAX_SAVES = 64  # files one SaveFiles may save
KINDS = {"OpenFile": "open", "SaveFile": "save", "SaveFiles": "saves"}
# How long the launcher waits for the sandbox's bus to appear once the app may start.
BUS_WAIT = 30.0
# A refused request, or a failure of the bus, is said at most once in this many seconds.
REFUSALS_SAID = 10.0


@dataclass(frozen=True)
class Ask:
    """A request, as this portal reads it."""

    kind: str  # "open", "save" or "saves" (several files, into a folder the user picks)
    title: str
    multiple: bool
    current_name: str | None
    names: tuple[str, ...] = ()  # "saves": the files' names


def _text(value: Any, limit: int) -> str:
    """A string of the sandbox's, without control characters, cut to limit: looked at no
    further than it is kept (a title of a hundred megabytes costs what its first characters
    cost)."""
    if not isinstance(value, str):
        return ""
    return "".join(itertools.islice(filter(str.isprintable, value[:limit * 4]), limit))


def read_ask(member: str, title: Any, options: Any) -> Ask | str:
    """The request OpenFile or SaveFile made; or why it is refused."""
    if not isinstance(options, dict):
        return "its options are not a dictionary"

    def option(name: str, signature: str) -> Any:
        value = options.get(name)
        return value.value if value is not None and value.signature == signature else None

    if option("directory", "b"):
        return "it asks for a folder: only files are handed to a sandbox"
    name = option("current_name", "s") if member == "SaveFile" else None
    name = os.path.basename(_text(name, 255)) or None
    names: tuple[str, ...] = ()
    if member == "SaveFiles":
        given = option("files", "aay") or []
        names = tuple(os.path.basename(_text(bytes(raw).rstrip(b"\0").decode(
            "utf-8", "replace"), 255)) for raw in given[:MAX_SAVES + 1])
        if not names or len(names) > MAX_SAVES or not all(names):
            return f"it names no files to save, or more than {MAX_SAVES}, or a name that is none"
        # The sandbox names these files, not the user: none hidden (a folder of the user's
        # such as their home would take ~/.profile), none that is '.' or '..'.
        if any(name.startswith(".") for name in names):
            return "it names a file that begins with '.'"
    return Ask(KINDS[member], _text(title, MAX_TITLE),
               bool(option("multiple", "b")) and member == "OpenFile", name, names)


class _BusLog(logging.Handler):
    """dbus-fast's own log, of the sandbox's bus: handed to say(message, exception)."""

    def __init__(self, say: Callable[[str, BaseException | None], None]) -> None:
        super().__init__()
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage(), record.exc_info[1] if record.exc_info else None)


class FileChooserPortal:
    """org.freedesktop.portal.FileChooser on the sandbox's bus, for as long as it runs."""

    def __init__(self, socket: Path, profile: str, *,
                 choose: Callable[[Ask, threading.Event], Choice],
                 hand: Callable[[Path], PurePosixPath],
                 save_to: Callable[[Path, bool], PurePosixPath],
                 focused: Callable[[], bool | None],
                 warn: Callable[[str], None]) -> None:
        self.socket = socket
        self.profile = profile
        self.choose = choose
        self.hand = hand
        self.save_to = save_to
        self.focused = focused
        self.warn = warn
        self._busy = threading.Lock()  # one dialog at a time
        self._refusals_lock = threading.Lock()
        self._refusals_said = float("-inf")
        self._refusals_unsaid = 0
        self._stop = threading.Event()
        # The requests being answered: a dialog each, or a refusal.
        self._answering = ThreadPoolExecutor(max_workers=4, thread_name_prefix="portal")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="portal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """At the launch's end: an open dialog is closed (host/chooser.py ends it within a
        few seconds), and the bus let go."""
        self._stop.set()
        self._answering.shutdown(wait=True, cancel_futures=True)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)

    # -- the bus ------------------------------------------------------------------------------

    def _open_socket(self) -> int | None:
        """The bus's socket, once it is there: opened without following a symlink, and only
        if it is a socket."""
        deadline = time.monotonic() + BUS_WAIT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(self.socket, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                self._stop.wait(0.05)
                continue
            except OSError:
                return None
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
            return None
        return None

    def _run(self) -> None:
        fd = self._open_socket()
        if fd is None:
            if not self._stop.is_set():
                self.warn("the sandbox's session bus did not start: it has no file chooser")
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        # What goes wrong under the loop and in dbus-fast is the sandbox's bus failing (its
        # program ended, or it misbehaves): never a traceback on the user's terminal.
        loop.set_exception_handler(lambda _, context: self._bus_failed(
            str(context.get("message")), context.get("exception")))
        said = _BusLog(self._bus_failed)
        logging.getLogger("dbus_fast").addHandler(said)
        logging.getLogger("dbus_fast").propagate = False
        try:
            bus = loop.run_until_complete(self._connect(fd))
            if bus is not None and not self._stop.is_set():
                loop.run_forever()
            if bus is not None:
                bus.disconnect()
        except Exception as exc:  # the sandbox's bus is hostile: say why, and go on
            self.warn(f"the file chooser stopped: {exc}")
        finally:
            os.close(fd)
            loop.close()
            logging.getLogger("dbus_fast").removeHandler(said)

    def _bus_failed(self, what: str, exc: BaseException | None) -> None:
        # A connection that broke (the sandbox closed it, or stopped reading) has nothing to
        # say: its requests are not answered. Anything else is one line.
        if not isinstance(exc, OSError):
            self._say_seldom(f"the file chooser's bus: {what}" + (f": {exc}" if exc else ""))

    async def _connect(self, fd: int) -> Any:
        from dbus_fast.aio import MessageBus
        from dbus_fast.auth import AuthAnonymous
        from dbus_fast.constants import NameFlag, RequestNameReply

        bus = await MessageBus(bus_address=f"unix:path=/proc/self/fd/{fd}",
                               auth=AuthAnonymous()).connect()
        bus.add_message_handler(lambda message: self._handle(bus, message))
        reply = await bus.request_name(PORTAL, NameFlag.DO_NOT_QUEUE)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            self.warn("a program in the sandbox took the file chooser's name: it has none")
            bus.disconnect()
            return None
        return bus

    # -- the messages -------------------------------------------------------------------------

    def _handle(self, bus: Any, message: Any) -> Any:
        from dbus_fast import Message, MessageType, Variant

        if message.message_type is not MessageType.METHOD_CALL:
            return None
        call = (message.interface, message.member)
        if message.path == PORTAL_PATH and call == (PROPERTIES, "Get"):
            if list(message.body) == [FILE_CHOOSER, "version"]:
                return Message.new_method_return(message, "v", [Variant("u", VERSION)])
            return Message.new_error(message, "org.freedesktop.DBus.Error.InvalidArgs",
                                     "no such property")
        if message.path == PORTAL_PATH and call == (PROPERTIES, "GetAll"):
            found = ({"version": Variant("u", VERSION)}
                     if list(message.body) == [FILE_CHOOSER] else {})
            return Message.new_method_return(message, "a{sv}", [found])
        if (message.path == PORTAL_PATH and message.interface == FILE_CHOOSER
                and message.member in KINDS and message.signature == "ssa{sv}"):
            return self._request(bus, message)
        if call == (REQUEST_INTERFACE, "Close"):
            return Message.new_method_return(message)
        return None  # dbus-fast answers the rest: no such method

    def _request(self, bus: Any, message: Any) -> Any:
        from dbus_fast import Message

        _, title, options = message.body
        token_variant = options.get("handle_token") if isinstance(options, dict) else None
        token = token_variant.value if token_variant is not None else ""
        if not isinstance(token, str) or not TOKEN.fullmatch(token):
            token = f"sandboxapp{time.monotonic_ns()}"
        # The request's object path is the portal's: /request/SENDER/TOKEN, nothing deeper.
        # A sender that is no client's name (the sandbox's bus daemon said so) cannot even be
        # answered: the call is taken, and nothing comes of it.
        if not isinstance(message.sender, str) or not UNIQUE_NAME.fullmatch(message.sender):
            return True
        sender = message.sender.lstrip(":").replace(".", "_")
        handle = f"{PORTAL_PATH}/request/{sender}/{token}"
        ask = read_ask(message.member, title, options)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the launch is ending: no more answers
            self._answering.submit(self._answer, bus, handle, ask)
        return Message.new_method_return(message, "o", [handle])

    def _answer(self, bus: Any, handle: str, ask: Ask | str) -> None:
        """Show the dialog and answer the request (on a thread of the executor)."""
        from dbus_fast import Message, Variant

        response, uris = 2, list[str]()
        try:
            response, uris = self._dialog(ask)
        except SandboxError as error:
            self.warn(f"the file chooser: {error.message}")
        except Exception as exc:  # whatever went wrong, the request is answered
            self.warn(f"the file chooser failed: {exc}")
        signal = Message.new_signal(handle, REQUEST_INTERFACE, "Response", "ua{sv}",
                                    [response, {"uris": Variant("as", uris)}])

        def send() -> None:
            # On the loop's thread. The sandbox's bus may be gone meanwhile (its program
            # ended): the answer has nobody to go to, and is dropped without a word.
            if bus.connected:
                with contextlib.suppress(Exception):
                    bus.send(signal)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the launch has ended: its loop is closed
            self._loop.call_soon_threadsafe(send)

    def _say_seldom(self, text: str) -> None:
        """Say text once in REFUSALS_SAID seconds at most (with how many more went unsaid),
        so that a sandbox asking, or failing, without end fills no log."""
        with self._refusals_lock:
            now = time.monotonic()
            if now - self._refusals_said < REFUSALS_SAID:
                self._refusals_unsaid += 1
                return
            more, self._refusals_unsaid, self._refusals_said = self._refusals_unsaid, 0, now
        self.warn(text + (f" ({more} more before it, unsaid)" if more else ""))

    def _refuse(self, why: str) -> tuple[int, list[str]]:
        """The answer to a refused request, said seldom."""
        self._say_seldom(why)
        return 2, []

    def _dialog(self, ask: Ask | str) -> tuple[int, list[str]]:
        if isinstance(ask, str):
            return self._refuse(f"the file chooser refused a request of {self.profile}'s: {ask}")
        if self.focused() is False:
            return self._refuse(f"{self.profile} asked for a file dialog while you were "
                                "elsewhere: refused")
        if not self._busy.acquire(blocking=False):
            return self._refuse(f"{self.profile} asked for a second file dialog: refused")
        try:
            # The launch may end meanwhile: the dialog is then closed, and nothing handed.
            choice = self.choose(ask, self._stop)
        finally:
            self._busy.release()
        if self._stop.is_set():
            return 2, []
        if choice.response != 0 or not choice.paths:
            return (choice.response if choice.response in (1, 2) else 2), []
        if ask.kind != "open":
            # The sandbox writes into a directory of this request's; the launcher copies the
            # finished file onto the path the user chose (host/saving.py), replacing what is
            # there only where the user named it.
            if ask.kind == "saves" and len(choice.paths) != len(ask.names):
                return 2, []
            return 0, ["file://" + quote(str(self.save_to(path, ask.kind == "save")))
                       for path in choice.paths[:len(ask.names) or 1]]
        return 0, ["file://" + quote(str(self.hand(path))) for path in choice.paths]


def title_for(profile: str, ask: Ask) -> str:
    """The dialog's title on the user's desktop: whose request it is, first."""
    what = ask.title or {"open": "Open a file", "save": "Save a file"}.get(ask.kind,
                                                                          "Save files")
    return f"{profile} (sandbox): {what}"
