"""The file dialog on the user's desktop: the desktop's own file chooser portal
(org.freedesktop.portal.FileChooser of xdg-desktop-portal, as GNOME and KDE have it), else
zenity's dialog. It runs in a process of its own, as the user and never as root (choose()
starts it); that process asks the desktop and prints what the user chose.

Its request, on its input, and its answer, on its output, are JSON:

    {"kind": "open", "save" or "saves", "title": TEXT, "multiple": BOOL,
     "current_name": NAME or null, "names": [NAME, ...], "folder": PATH or null}
    {"response": 0 (chosen), 1 (cancelled) or 2 (failed), "paths": [PATH, ...]}
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sandboxapp.command import base_env, program_exists, spawn
from sandboxapp.fs.safepath import DesktopUser

# What the dialog's process may know of the user's session: where the desktop and its bus are.
SESSION_VARIABLES = ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY",
                     "XDG_RUNTIME_DIR", "XDG_CURRENT_DESKTOP", "XDG_SESSION_TYPE", "HOME",
                     "LANG", "LC_ALL")
PORTAL = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
FILE_CHOOSER = "org.freedesktop.portal.FileChooser"
MAX_ANSWER = 1 << 20
# How often a dialog's launcher looks whether the launch is ending.
STOP_POLL = 0.25


@dataclass(frozen=True)
class Choice:
    """What the user chose: the portal's response (0 chosen, 1 cancelled, 2 failed) and the
    files."""

    response: int
    paths: tuple[Path, ...] = ()


def choose(kind: str, title: str, *, multiple: bool, current_name: str | None,
           names: tuple[str, ...], folder: Path | None, user: DesktopUser,
           environ: Mapping[str, str], stop: threading.Event) -> Choice:
    """Show the dialog on the user's desktop, as the user, and wait for their choice. folder:
    where a save starts (the user's download directory). stop: the launch is ending; the
    dialog is closed, and nothing was chosen."""
    env = base_env({key: environ[key] for key in SESSION_VARIABLES if environ.get(key)})
    bootstrap = (f"import sys; sys.path[0:0] = {sys.path!r}; "
                 "from sandboxapp.host.chooser import main; main()")
    argv = [sys.executable, "-c", bootstrap]
    owner = user.acted_for()
    if owner is not None:
        argv = ["setpriv", f"--reuid={owner.uid}", f"--regid={owner.gid}", "--init-groups",
                "--", *argv]
    request = json.dumps({"kind": kind, "title": title, "multiple": multiple,
                          "current_name": current_name, "names": list(names),
                          "folder": None if folder is None else str(folder)})
    # A session of its own: the dialog's process, and zenity it may start, are one group to
    # end, and a signal to the launcher's terminal is the launcher's to act on.
    process = spawn(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, new_session=True)
    data: bytes | None = request.encode()
    while True:
        try:
            out, _ = process.communicate(data, timeout=STOP_POLL)
            break
        except subprocess.TimeoutExpired:
            data = None  # given once: the rest of the conversation carries it on
            if stop.is_set():
                _end(process)
                return Choice(2)
    try:
        answer = json.loads(out[:MAX_ANSWER])
        paths = tuple(Path(path) for path in answer["paths"] if isinstance(path, str))
        return Choice(int(answer["response"]), paths)
    except (ValueError, KeyError, TypeError):
        return Choice(2)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Ask the dialog's process to end (it closes the desktop's dialog: the portal's request),
    then make it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


# -- the dialog's own process ------------------------------------------------------------


def _paths(uris: list[str]) -> list[str]:
    """The local files among the portal's URIs."""
    found = []
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            found.append(unquote(parts.path))
    return found


async def _ask_portal(request: dict[str, object]) -> tuple[int, list[str]] | None:
    """The desktop's file chooser portal; None where the session has none."""
    import asyncio

    from dbus_fast import Message, MessageType, Variant
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusError

    # Asked to end (the launch ends): the dialog is closed, and nothing was chosen.
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[tuple[int, list[str]]] = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result((2, []))

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        bus = await MessageBus().connect()
    except (OSError, ValueError, DBusError):
        return None
    try:
        token = "sandboxapp" + secrets.token_hex(8)
        sender = (bus.unique_name or "").lstrip(":").replace(".", "_")
        handle = f"{PORTAL_PATH}/request/{sender}/{token}"
        answered: asyncio.Future[tuple[int, list[str]]] = loop.create_future()

        def on_message(message: Message) -> None:
            if (message.message_type is MessageType.SIGNAL and message.path == handle
                    and message.member == "Response" and not answered.done()):
                response, results = message.body
                uris = results.get("uris")
                answered.set_result((int(response), list(uris.value) if uris else []))

        bus.add_message_handler(on_message)
        await bus.call(Message(destination="org.freedesktop.DBus",
                               path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                               member="AddMatch", signature="s",
                               body=[f"type='signal',interface='org.freedesktop.portal.Request',"
                                     f"member='Response',path='{handle}'"]))
        options: dict[str, Variant] = {"handle_token": Variant("s", token),
                                       "modal": Variant("b", True)}
        folder = request.get("folder")
        if request["kind"] == "open":
            member = "OpenFile"
            options["multiple"] = Variant("b", bool(request.get("multiple")))
        else:
            if isinstance(folder, str):
                options["current_folder"] = Variant("ay", folder.encode() + b"\0")
            if request["kind"] == "saves":
                member = "SaveFiles"
                names = request.get("names")
                options["files"] = Variant("aay", [str(name).encode() + b"\0" for name in
                                                   (names if isinstance(names, list) else [])])
            else:
                member = "SaveFile"
                name = request.get("current_name")
                if isinstance(name, str) and name:
                    options["current_name"] = Variant("s", name)
        reply = await bus.call(Message(destination=PORTAL, path=PORTAL_PATH,
                                       interface=FILE_CHOOSER, member=member,
                                       signature="ssa{sv}",
                                       body=["", str(request["title"]), options]))
        if reply is None or reply.message_type is MessageType.ERROR:
            return None  # no portal, or none with a file chooser
        await asyncio.wait({answered, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if answered.done():
            return answered.result()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.call(Message(
                destination=PORTAL, path=handle, interface="org.freedesktop.portal.Request",
                member="Close")), 2)
        return 2, []
    finally:
        bus.disconnect()


def _ask_zenity(request: dict[str, object]) -> tuple[int, list[str]]:
    """sandboxapp's own dialog, where the desktop has no file chooser portal."""
    if not program_exists("zenity"):
        return 2, []
    argv = ["zenity", "--file-selection", f"--title={request['title']}", "--separator=\n"]
    folder = request.get("folder")
    start = f"{folder}/" if isinstance(folder, str) else ""
    if request["kind"] == "open" and request.get("multiple"):
        argv.append("--multiple")
    if request["kind"] == "save":
        argv += ["--save", "--confirm-overwrite"]
        if isinstance(request.get("current_name"), str):
            argv.append(f"--filename={start}{request['current_name']}")
    if request["kind"] == "saves":
        argv += ["--directory", f"--filename={start}"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            env=dict(os.environ))
    if result.returncode != 0:
        return 1, []
    chosen = [line for line in result.stdout.splitlines() if line]
    if request["kind"] == "saves" and chosen:
        names = request.get("names")
        return 0, [os.path.join(chosen[0], str(name))
                   for name in (names if isinstance(names, list) else [])]
    return 0, chosen


def main() -> None:
    """The dialog's process: its request on the input, its answer on the output."""
    import asyncio

    request = json.loads(sys.stdin.read(MAX_ANSWER))
    found = asyncio.run(_ask_portal(request))
    if found is None:
        response, paths = _ask_zenity(request)
    else:
        response, paths = found[0], _paths(found[1])
    sys.stdout.write(json.dumps({"response": response, "paths": paths}))
