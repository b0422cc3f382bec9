"""An X server of the sandbox's own, nested in the user's display: Xephyr, drawing into a
window of the launcher's.

The sandbox's clients reach only this server. What the SECURITY extension cannot stop on a
shared server (a keyboard grab that reads what the user types elsewhere, the clipboard and cut
buffers read at any time, other windows' titles, input settings changed for the whole desktop,
one sandbox reaching another) has nothing to reach here: the user's other windows are on
another server, and every sandbox has a server of its own. Xwayland, which has no SECURITY
extension, serves Xephyr like any client.

Xephyr is the one client of the user's display in this path, and it parses the sandbox's
hostile protocol, so it gets as little as it needs:
  :N, -displayfd      a display number that no server holds, by its socket, its lock file or
                      its abstract name (one in another mount namespace, a service's private
                      /tmp, has only the last in common with us: clients try it first); the
                      launcher holds that name for as long as Xephyr runs (reserve_number), and
                      Xephyr says when it listens, which is waited for while the container
                      starts;
  -auth FILE          a cookie of the sandbox's own (a file in the sandbox's X directory);
  -nolisten tcp, -nolisten local
                      its filesystem socket only: no TCP, and no abstract socket, which any
                      process in the host's network namespace (a sandbox with network =
                      "host") could reach without the bind;
  -no-host-grab       Ctrl+Shift never grabs the user's keyboard and pointer;
  -parent WINDOW      it draws into the launcher's window, whose title, class and mapping the
                      launcher sets (from the profile, never from inside), and whose size it
                      follows (-resizeable: its screen changes size with RandR);
  -extension XTEST, -extension RECORD
                      nothing in a sandbox has to fake input or record what other clients
                      (the launcher) say, even on its own server;
  -extension GLX, -extension XVideo (and its motion compensation)
                      no GL through the socket (software rendering only) and no video
                      overlays: code the sandbox's requests would reach, for nothing it needs;
  -extension MIT-SHM  a segment id the sandbox names is one of Xephyr's IPC namespace, the
                      host's, not the container's: Xephyr would attach another program's
                      segment that its mode lets others read (or write), and hand the sandbox
                      its contents. Images cross the socket instead (PutImage: Xephyr draws
                      them into its screen and sends the user's server only what changed, as
                      often as it catches up, so drawing is as fast as on the user's server);
  -noreset            the last client leaving does not reset it;
  -dpi                the user's, so text is the size it is on the user's other windows;
and it runs as the desktop user, never as root, even for a launch root makes for that user.

The launcher's connections to both servers (python-xlib) make the window behave like the
app's: it is mapped when the app's first window maps, carries the app's title behind the
sandbox's name, follows resizes with the app's main window filling the nested screen, and
gives the keyboard to the nested server whenever the user gives it the focus. The user's
keyboard layout is copied into the nested server (xkbcomp). The clipboard crosses by the rule
of host/clipboard.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp.command import base_env, program_exists, run, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.safepath import DesktopUser, read_user_file
from sandboxapp.host.clipboard import ClipboardBridge, Directions
from sandboxapp.host.display import NESTED_START_TIMEOUT, X11_SOCKET_DIR, Display, XAccess
from sandboxapp.host.xconnection import connection, write_cookie_file

if TYPE_CHECKING:
    import subprocess

    from Xlib.display import Display as XDisplay

XEPHYR = "Xephyr"
OPTIONS = ("-nolisten", "tcp", "-nolisten", "local", "-no-host-grab", "-resizeable",
           "-extension", "XTEST", "-extension", "RECORD", "-extension", "GLX",
           "-extension", "XVideo", "-extension", "XVideo-MotionCompensation",
           "-extension", "MIT-SHM", "-noreset")
# Display numbers tried for the nested server, from the first: above those desktops take.
FIRST_NUMBER = 20
LAST_NUMBER = 1000
# Events whose handling ended in an error, of one launch, past which the user is told.
NOISY_ERRORS = 100
# Events of the sandbox's server queued unhandled, at most.
MAX_QUEUED = 10_000
# The app's top-level windows remembered for the keyboard to go back to, at most.
MAX_SHOWN = 32
# The protocols of a window's WM_PROTOCOLS read, at most (ICCCM names three).
MAX_PROTOCOLS = 16
# What the launcher writes to the display's thread (NestedDisplay.wake_write).
END, CLOSE = b"x", b"c"
# How long after its window is mapped a focus it gets is the mapping's, not the user's.
MAPPING_FOCUS = 1.0
# The most of a title read from inside (bytes), and shown (characters).
TITLE_BYTES = 1024
TITLE_CHARS = 200
# The window's icon (_NET_WM_ICON): PNG files of at most this many pixels a side, at most this
# many sizes, and in all no more words than one ChangeProperty request carries without
# BIG-REQUESTS, which python-xlib does not use (a 16-bit length in words, 6 of them the
# request's own): a 256x256 icon alone is more.
ICON_SIDE = 128
ICON_SIZES = 8
ICON_WORDS = 0xFFFF - 6


def check_installed() -> None:
    """Before anything is built or started: the nested server is there to be started."""
    if not program_exists(XEPHYR):
        raise SandboxError("x11 = true gives the sandbox an X server of its own, and Xephyr "
                           "is not installed", hint="apt-get install xserver-xephyr "
                           "x11-xkb-utils (or run the README's install command)",
                           status=ExitStatus.LAUNCHER)


def wm_class(profile_name: str) -> str:
    """The class of a sandbox's window (WM_CLASS), which its menu entry's StartupWMClass names:
    the profile's, never one from inside."""
    return f"sandboxapp-{profile_name}"


@dataclass(frozen=True)
class WindowLook:
    """What the user's desktop sees of the sandbox's window: all of it from the profile."""

    title: str  # e.g. "firefox (sandbox)": always first in the window's title
    instance: str  # WM_CLASS, which menu entries' StartupWMClass names
    klass: str
    width: int = 1024
    height: int = 768
    # The program's icon files, found (in its pristine image) on the display's thread, off the
    # launch's path.
    icons: Callable[[], Sequence[Path]] | None = None


def shown_title(look: WindowLook, inside: bytes | None) -> str:
    """The window's title: the sandbox's name first, then what the app calls its window (a
    string from inside: cut short, its control characters dropped)."""
    if not inside:
        return look.title
    text = inside[:TITLE_BYTES].decode("utf-8", errors="replace")
    text = "".join(c for c in text if c.isprintable()).strip()[:TITLE_CHARS]
    return f"{look.title}: {text}" if text else look.title


def reserve_number(stack: contextlib.ExitStack, start: int = FIRST_NUMBER) -> int:
    """The first display number from start that no server holds, reserved until stack unwinds.

    Xephyr listens on no abstract socket (-nolisten local), and a client inside tries the
    abstract name @/tmp/.X11-unix/XN before the socket file it was given: in the host's network
    namespace (network = "host") any local process that took that name would sit between the
    sandbox and its server (its cookie, its every key and picture). The launcher holds the name
    itself, bound and never listening: a client there is refused at once and goes on to the
    file. Binding it is also what reserves the number, atomically, against another launch."""
    for number in range(start, LAST_NUMBER):
        if (X11_SOCKET_DIR / f"X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            holder.bind(f"\0{X11_SOCKET_DIR}/X{number}")
        except OSError:
            holder.close()
            continue  # a server (or a process in its place) holds it
        stack.callback(holder.close)
        return number
    raise SandboxError(f"no free X display number between {start} and {LAST_NUMBER}",
                       status=ExitStatus.LAUNCHER)


def _read_number(fd: int, process: subprocess.Popen[bytes]) -> int:
    """The display number Xephyr writes to -displayfd once it listens."""
    deadline = time.monotonic() + NESTED_START_TIMEOUT
    data = b""
    while not data.endswith(b"\n") and len(data) < 16:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SandboxError("the sandbox's X server did not start in "
                               f"{NESTED_START_TIMEOUT:.0f} s", status=ExitStatus.LAUNCHER)
        chunk = os.read(fd, 16)
        if not chunk:
            status = process.poll()
            raise SandboxError(
                "the sandbox's X server (Xephyr) ended as it started"
                + (f" (exit status {status})" if status is not None else ""),
                hint="its messages are in the run log", status=ExitStatus.LAUNCHER)
        data += chunk
    try:
        return int(data.strip())
    except ValueError:
        raise SandboxError(f"the sandbox's X server said {data!r}, not a display number",
                           status=ExitStatus.LAUNCHER) from None


class NestedDisplay:
    """A running nested server: its display inside, and the launcher's side of its window."""

    def __init__(self, host: XDisplay, window: Any, process: subprocess.Popen[bytes],
                 display: Display, access: XAccess, look: WindowLook, user: XAccess,
                 clipboard: Directions) -> None:
        self.host = host
        self.clipboard = clipboard
        self.user = user  # the user's display, as the launcher reaches it
        self.window = window
        self.process = process
        self.display = display
        self.access = access  # the nested server, as the launcher reaches it
        self.look = look
        self.mapped = threading.Event()  # the window is on the user's screen
        self.main: Any = None  # the app's window whose title the user's window carries
        # The app's top-level windows (no menus: override-redirect), as they were mapped: the
        # last one still shown gets the keyboard when another goes.
        self.shown: list[Any] = []
        self.title_stale = False
        self.errors = 0  # events whose handling an X error ended (see _guarded)
        self.dropped = 0  # times the sandbox's backlog of events was dropped (_bound_queue)
        self.problems: list[str] = []
        self.last_problem = ""
        # Until then, a focus the window gets came with its mapping, not from the user.
        self.mapping_focus_until = 0.0
        # Whether the window has the user's keyboard focus (a sandbox's file dialog is shown
        # only then: features/portal.py).
        self.focused = False
        self.bridge: ClipboardBridge | None = None
        # Written to end the thread (b"x"), or to have it ask the app's windows to close.
        self.wake_read, self.wake_write = os.pipe()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Until wait_ready(): the stack its connection and thread go on, and the pipe Xephyr
        # says its display number on once it listens.
        self.starting: tuple[contextlib.ExitStack, int] | None = None

    def wait_ready(self) -> None:
        """Wait for the server to listen (what it says on -displayfd), then connect to it and
        follow it on a thread of its own: before any client of the sandbox can map a
        window (the app's gate opens after this)."""
        from Xlib import X

        if self.starting is None:
            return
        stack, said = self.starting
        self.starting = None
        if _read_number(said, self.process) != self.display.number:
            raise SandboxError(f"the sandbox's X server did not take display "
                               f"{self.display.name}", status=ExitStatus.LAUNCHER)
        inside = stack.enter_context(connection(self.access))
        # Listening for the app's windows before any client can map one.
        inside.screen().root.change_attributes(
            event_mask=X.SubstructureNotifyMask | X.StructureNotifyMask)
        inside.sync()
        stack.callback(self.close)  # the thread ends before the connections close
        self.thread = threading.Thread(target=self.serve, args=(inside,), daemon=True,
                                       name="nested-display")
        self.thread.start()

    # -- the window's behaviour, on the launcher's thread of it ---------------------------

    def serve(self, nested: XDisplay) -> None:
        """Follow both servers until close(): runs on a thread of its own."""
        from Xlib import X

        try:
            root = nested.screen().root
            # The launcher's own window inside, never mapped: it owns what the user's
            # clipboard offers there.
            owner = root.create_window(0, 0, 1, 1, 0, 0, X.InputOnly, X.CopyFromParent)
            self.bridge = ClipboardBridge(self.clipboard, self.host, self.window, nested, owner,
                                          refresh=self._host_events)
            # What the sandbox's clients make the server answer with an error is counted,
            # not printed (python-xlib's default) into the user's log.
            nested.set_error_handler(self._count_error)
            self.bridge.start()
            nested.flush()
            self._set_icon()
            try:
                _copy_keymap(self.user, self.access)
            except SandboxError as problem:
                self.problems.append(f"the keyboard layout was not copied in: {problem.message}")
            self.main = None
            while True:
                # The user's server first, and between every event of the sandbox's: the
                # focus is known as it is before anything inside is acted on, however much
                # the sandbox sends. What python-xlib has read already (a round trip reads
                # the events before its reply) is handled before waiting for more.
                while self._host_events() or nested.pending_events():
                    self._bound_queue(nested)
                    if nested.pending_events():
                        self._guarded(self._nested_event, nested, nested.next_event(), root)
                self._apply_title(nested)
                self.host.flush()
                nested.flush()
                if self.host.pending_events() or nested.pending_events():
                    continue  # a flush reads what has come meanwhile too
                ready, _, _ = select.select([self.wake_read, self.host.fileno(),
                                             nested.fileno()], [], [])
                if self.wake_read in ready:
                    said = os.read(self.wake_read, 64)
                    if END in said:
                        return
                    self._guarded(self._close_windows, nested)
        except Exception as error:  # the servers' end (the sandbox's, or the user's)
            self.error = error  # said by report()

    def _bound_queue(self, nested: XDisplay) -> None:
        """A sandbox that makes events faster than they are handled (renaming its window in a
        loop) has what python-xlib queued of them dropped, past MAX_QUEUED: the launcher's
        memory stays bounded. The title and the window's mapping are then read afresh."""
        queue = nested.display.event_queue
        if len(queue) <= MAX_QUEUED:
            return
        del queue[:]
        self.dropped += 1
        self.title_stale = True
        if not self.mapped.is_set() or self.main is None:
            self._adopt_mapped(nested)

    def _adopt_mapped(self, nested: XDisplay) -> None:
        """What a dropped MapNotify would have said: the app's mapped top-level window."""
        from Xlib import X

        root = nested.screen().root
        for child in root.query_tree().children:
            attributes = child.get_attributes()
            if attributes.map_state == X.IsViewable and not attributes.override_redirect:
                self.main = child
                self.shown = [child]
                self.title_stale = True
                self._show()
                return

    def _count_error(self, problem: Any, request: Any) -> None:
        self.errors += 1
        self.last_problem = repr(problem)

    def _host_events(self) -> bool:
        """Handle what the user's server has sent; whether there was anything."""
        handled = False
        while self.host.pending_events():
            self._guarded(self._host_event, self.host.next_event())
            handled = True
        return handled

    def _guarded(self, handle: Any, *args: Any) -> None:
        """One event handled: an X error from it (a window the sandbox destroyed meanwhile,
        an event it forged) ends that event's handling, not the thread."""
        from Xlib import error

        try:
            handle(*args)
        except (error.XError, error.BadValue, KeyError, AttributeError, TypeError,
                ValueError) as problem:
            self.errors += 1
            self.last_problem = repr(problem)

    def _host_event(self, event: Any) -> None:
        from Xlib import X

        assert self.bridge is not None
        if self.bridge.host_event(event):
            return
        if event.type == X.ConfigureNotify and event.window == self.window:
            # The user resized the window: Xephyr's window in it fills it, and Xephyr's
            # screen follows (RandR).
            for child in self.window.query_tree().children:
                child.configure(width=event.width, height=event.height)
        elif event.type == X.FocusIn and event.detail not in (X.NotifyInferior,
                                                               X.NotifyPointer):
            self.focused = True
            self.bridge.focused(by_user=time.monotonic() > self.mapping_focus_until)
            if event.detail in (X.NotifyAncestor, X.NotifyNonlinear):
                # The desktop gave the window itself the focus: the keyboard goes on to
                # Xephyr's window in it (its moving there is a FocusOut of detail Inferior).
                for child in self.window.query_tree().children:
                    child.set_input_focus(X.RevertToParent, X.CurrentTime)
        elif event.type == X.FocusOut and event.detail not in (X.NotifyInferior,
                                                                X.NotifyPointer):
            self.focused = False
            self.bridge.unfocused()

    def _nested_event(self, nested: XDisplay, event: Any, root: Any) -> None:
        from Xlib import X

        assert self.bridge is not None
        if self.bridge.nested_event(event):
            return
        if event.send_event:
            return  # what another client of the nested server forged: not the server's word
        main = self.main
        if event.type == X.MapNotify and event.event == root and not event.override:
            window = event.window
            window.change_attributes(event_mask=X.PropertyChangeMask)
            if window.get_wm_transient_for() is None:
                self._fill(window, root)
                self.main = window
                self.title_stale = True
            window.set_input_focus(X.RevertToPointerRoot, X.CurrentTime)
            self.shown = [*(shown for shown in self.shown if shown != window),
                          window][-MAX_SHOWN:]
            self._show()
        elif event.type == X.PropertyNotify and event.window == main:
            self.title_stale = True  # applied once the queue is handled (_apply_title)
        elif event.type in (X.UnmapNotify, X.DestroyNotify) and event.event == root:
            if event.type == X.DestroyNotify and event.window == main:
                self.main = None
            if event.window in self.shown:
                # A dialog (or another window) went: the keyboard goes back to the one shown
                # before it, as a window manager gives it back.
                self.shown.remove(event.window)
                if self.shown:
                    self.shown[-1].set_input_focus(X.RevertToPointerRoot, X.CurrentTime)
        elif event.type == X.ConfigureNotify and event.window == root and main is not None:
            self._fill(main, root)

    def _set_icon(self) -> None:
        """The profile's icon on the user's window, before it is mapped (a desktop that groups
        windows by the menu entry's StartupWMClass shows the entry's icon anyway)."""
        if self.look.icons is None:
            return
        from Xlib import Xatom

        try:
            icon, unread = icon_property(self.look.icons())
            self.problems += [f"an icon file was left out: {text}" for text in unread]
            if icon:
                self.window.change_property(self.host.intern_atom("_NET_WM_ICON"),
                                            Xatom.CARDINAL, 32, icon)
        except Exception as problem:
            # Whatever went wrong is said at the launch's end: an icon never ends the window.
            self.problems.append(f"the window's icon was not set: {problem!r}")

    def _show(self) -> None:
        """The user's window, mapped with the app's first window (once)."""
        if self.mapped.is_set():
            return
        self.window.map()
        self.host.flush()  # at once: its mapping's focus is stamped from now
        self.mapping_focus_until = time.monotonic() + MAPPING_FOCUS
        self.mapped.set()

    def _apply_title(self, nested: XDisplay) -> None:
        """The main window's title, once for however many changes came at once."""
        if not self.title_stale or self.main is None:
            return
        self.title_stale = False
        self._guarded(self._set_title, nested, self.main)

    @staticmethod
    def _fill(window: Any, root: Any) -> None:
        geometry = root.get_geometry()
        window.configure(x=0, y=0, width=geometry.width, height=geometry.height)

    def _set_title(self, nested: XDisplay, window: Any) -> None:
        from Xlib import X

        inside = None
        for name in ("_NET_WM_NAME", "WM_NAME"):
            # An error here (the window gone) ends the title's reading (_guarded).
            found = window.get_property(nested.intern_atom(name), X.AnyPropertyType, 0,
                                        TITLE_BYTES // 4)
            if found is not None and found.format == 8 and found.value:
                value = found.value
                inside = value if isinstance(value, bytes) else str(value).encode()
                break
        self._title(shown_title(self.look, inside))

    def _title(self, title: str) -> None:
        host = self.host
        self.window.set_wm_name(title.encode("latin-1", errors="replace").decode("latin-1"))
        self.window.change_property(host.intern_atom("_NET_WM_NAME"),
                                    host.intern_atom("UTF8_STRING"), 8, title.encode())

    def report(self) -> list[str]:
        """What the launch should tell the user: the window stopped following the program, or
        the sandbox's events were dropped or made errors (a program that misbehaves)."""
        lines = list(self.problems)
        if self.error is not None:
            lines.append(f"the sandbox's window stopped following its program: {self.error!r}")
        # A window gone before its event is handled is an error now and then; many, or a
        # dropped backlog, is a program that floods or forges.
        if self.errors >= NOISY_ERRORS or self.dropped:
            lines.append(f"the sandbox's X server had {self.errors} requests of the launcher's "
                         f"end in errors and {self.dropped} backlogs of events dropped "
                         f"(last: {self.last_problem or 'none'})")
        return lines

    def ask_to_close(self) -> bool:
        """Have the thread ask the app's top-level windows to close (WM_DELETE_WINDOW); True
        if the app has one shown. Called from another thread: the connection is the thread's."""
        if self.thread is None or not self.shown:
            return False
        with contextlib.suppress(OSError):
            os.write(self.wake_write, CLOSE)
        return True

    def _close_windows(self, nested: XDisplay) -> None:
        """Every top-level window of the app's that takes WM_DELETE_WINDOW is sent it, as a
        window manager sends it when the user presses the window's close button (ICCCM 4.2.8.1);
        dialogs first, the main window last."""
        from Xlib import X, Xatom
        from Xlib.protocol import event

        protocols = nested.intern_atom("WM_PROTOCOLS")
        delete = nested.intern_atom("WM_DELETE_WINDOW")
        for window in reversed(self.shown):
            with contextlib.suppress(Exception):  # gone meanwhile
                # A bounded read: the sandbox makes the property as long as it likes.
                said = window.get_property(protocols, Xatom.ATOM, 0, MAX_PROTOCOLS)
                if said is None or delete not in said.value:
                    continue
                window.send_event(event.ClientMessage(
                    window=window, client_type=protocols,
                    data=(32, [delete, X.CurrentTime, 0, 0, 0])), event_mask=0)
        nested.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_write, END)
        if self.thread is not None:
            self.thread.join(timeout=5)
        for fd in (self.wake_read, self.wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)


def icon_property(files: Sequence[Path]) -> tuple[list[int], list[str]]:
    """_NET_WM_ICON's value for PNG icon files: for each size, its width, its height and its
    pixels as ARGB, smallest first, as many sizes as ICON_WORDS holds. Files of another kind
    or too large are left out; a file that cannot be read or decoded costs only its own size,
    and is named in the second list."""
    from PIL import Image

    icons: dict[int, list[int]] = {}
    unread: list[str] = []
    for path in files:
        if path.suffix != ".png" or len(icons) >= ICON_SIZES:
            continue
        try:
            with Image.open(path, formats=["PNG"]) as image:
                width, height = image.size  # read from the header: nothing is decoded yet
                if not (0 < width <= ICON_SIDE and 0 < height <= ICON_SIDE) or width in icons:
                    continue
                pixels = image.convert("RGBA").tobytes("raw", "BGRA")
        except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError and more
            unread.append(f"{path}: {error}")
            continue
        # Little-endian BGRA bytes are ARGB cardinals.
        icons[width] = [width, height, *struct.unpack(f"<{width * height}I", pixels)]
    value: list[int] = []
    for width in sorted(icons):
        if len(value) + len(icons[width]) > ICON_WORDS:
            break
        value += icons[width]
    return value, unread


def _dpi(host: XDisplay) -> int:
    screen = host.screen()
    pixels, millimetres = int(screen.width_in_pixels), int(screen.width_in_mms)
    if millimetres <= 0:
        return 96
    return max(48, min(480, round(pixels * 25.4 / millimetres)))


def _parent_window(host: XDisplay, look: WindowLook) -> Any:
    """The window Xephyr draws into: the launcher's, unmapped until the app maps its first."""
    from Xlib import X, Xatom

    window = host.screen().root.create_window(
        0, 0, look.width, look.height, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
        background_pixel=host.screen().black_pixel,
        event_mask=X.StructureNotifyMask | X.FocusChangeMask)
    window.set_wm_class(look.instance, look.klass)
    window.set_wm_name(look.title)
    window.change_property(host.intern_atom("_NET_WM_NAME"), host.intern_atom("UTF8_STRING"),
                           8, look.title.encode())
    window.change_property(host.intern_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [os.getpid()])
    host.sync()  # it exists before Xephyr looks for it
    return window


def _copy_keymap(user: XAccess, nested: XAccess) -> None:
    """The user's keyboard layout, into the nested server (what Xephyr starts with is a US
    layout)."""
    def env(access: XAccess) -> dict[str, str]:
        cookie = access.cookie_file()
        return base_env({"DISPLAY": access.display.name,
                         **({"XAUTHORITY": str(cookie)} if cookie else {})})

    import tempfile

    keymap = run(["xkbcomp", "-xkb", user.display.name, "-"], env=env(user), capture=True,
                 what="reading the keyboard layout").output
    with tempfile.TemporaryFile() as stream:
        stream.write(keymap.encode())
        stream.seek(0)
        run(["xkbcomp", "-w", "0", "-", nested.display.name], env=env(nested),
            stdin=stream.fileno(), what="setting the keyboard layout")


@contextlib.contextmanager
def nested_display(access: XAccess, directory: Path, look: WindowLook,
                   clipboard: Directions,
                   user: DesktopUser | None = None) -> Iterator[NestedDisplay]:
    """Xephyr in a window of the launcher's on the user's display (access), its cookie in
    directory (the sandbox's X directory, the user's own, 0700), the clipboard crossing as
    clipboard says, until the context ends. user: the desktop user's (uid, gid), where root
    launches for that user: Xephyr runs as the user, and the cookie file is the user's.

    The display is started, not yet ready: its number is known at once (for the container's
    environment), and wait_ready() waits for the server while the container starts."""
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(connection(access))
        window = _parent_window(host, look)
        stack.callback(_quietly, window.destroy, host)
        cookie_file = write_cookie_file(directory, os.urandom(16),
                                        user or DesktopUser(os.getuid(), os.getgid()))
        number = reserve_number(stack)
        process, said = _start_server(stack, access, number, window.id, cookie_file, _dpi(host),
                                      user)
        nested = NestedDisplay(host, window, process, Display(number),
                               XAccess(Display(number), str(cookie_file)), look, access,
                               clipboard)
        nested.starting = (stack, said)
        yield nested


def _start_server(stack: contextlib.ExitStack, access: XAccess, number: int, window: int,
                  cookie_file: Path, dpi: int,
                  user: DesktopUser | None) -> tuple[subprocess.Popen[bytes], int]:
    """Xephyr on display number (stopped when stack unwinds), and the pipe it says it listens
    on (-displayfd)."""
    as_user = [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"] if user else []
    user_cookie = access.cookie_file()
    cookie = str(user_cookie) if user_cookie else None
    inherited: tuple[int, ...] = ()
    if user is not None and user_cookie is not None:
        # Xephyr, the user's process, reads the cookie for the user's display from a copy of
        # the file root read for it (never a file it could not read itself, nor one in the
        # directory the sandbox sees).
        copy = os.memfd_create("xauthority")
        stack.callback(os.close, copy)
        os.write(copy, read_user_file(user_cookie, user, trusted=True, limit=1 << 20))
        inherited, cookie = (copy,), f"/proc/self/fd/{copy}"
    env = base_env({"DISPLAY": access.display.name, **({"XAUTHORITY": cookie} if cookie else {})})
    read_end, write_end = os.pipe()
    stack.callback(os.close, read_end)
    try:
        # Should the launcher die, its server goes with it.
        process = spawn(["setpriv", *as_user, "--pdeathsig", "TERM", "--", XEPHYR, f":{number}",
                         "-displayfd", str(write_end), "-auth", str(cookie_file), "-parent",
                         str(window), "-dpi", str(dpi), *OPTIONS],
                        env=env, pass_fds=(write_end, *inherited), new_session=True)
    finally:
        os.close(write_end)
    stack.callback(_stop, process)
    return process, read_end


def _quietly(action: Any, host: XDisplay) -> None:
    """An undo on the user's display that may find the display gone already."""
    from Xlib import error

    with contextlib.suppress(error.XError, error.ConnectionClosedError, OSError):
        action()
        host.sync()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
