"""The sandbox's own X server (host/nested.py), nested in the user's display (Xvfb, as a
desktop's X server runs), attacked from inside as a sandboxed client would, and looked at as the
user sees its window.

The clients "inside" here connect to the nested display with its cookie, as a sandbox's do
through the bound socket; what they can reach is what the nested server lets them reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from Xlib import XK, X, error

from sandboxapp.host.clipboard import Directions
from sandboxapp.host.display import X11_SOCKET_DIR, XAccess, parse_display
from sandboxapp.host.nested import NestedDisplay, WindowLook, nested_display
from sandboxapp.host.xconnection import connection
from tests.harness import XServer, require_programs, x_client, x_server
from tests.integration.test_x11_isolation import key_presses, type_keys, victim_window

LOOK = WindowLook(title="demo (sandbox)", instance="sandboxapp-demo", klass="Sandboxapp-demo",
                  width=640, height=480)


@pytest.fixture
def xserver(tmp_path: Path) -> Iterator[XServer]:
    require_programs("Xephyr", "xkbcomp", "setxkbmap", "xdotool", "xclip", "xlogo", "xdpyinfo")
    with x_server(tmp_path) as server:
        yield server


BOTH_WAYS = Directions(inward=True, outward=True)


@contextlib.contextmanager
def nested(server: XServer, directory: Path,
           clipboard: Directions = BOTH_WAYS) -> Iterator[NestedDisplay]:
    directory.mkdir(mode=0o700)
    user = XAccess(parse_display(server.display), str(server.xauthority))
    with nested_display(user, directory, LOOK, clipboard) as display:
        display.wait_ready()
        yield display


def inside_env(display: NestedDisplay) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "DISPLAY": display.display.name,
            "XAUTHORITY": str(display.access.cookie_file())}


def inside(display: NestedDisplay, *argv: str,
           timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=inside_env(display), capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextlib.contextmanager
def running_app(display: NestedDisplay, title: str) -> Iterator[subprocess.Popen[str]]:
    """An app with a window inside (xlogo), until the context ends."""
    app = subprocess.Popen(["xlogo", "-title", title, "-geometry", "200x150"],
                           env=inside_env(display), text=True)
    try:
        yield app
    finally:
        app.kill()
        app.wait()


def wait_until(predicate: Any, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not in {seconds} s: {what}")


def host_window(host: Any, display: NestedDisplay) -> Any:
    return host.create_resource_object("window", display.window.id)


def test_only_its_cookie_opens_it_and_it_listens_on_no_abstract_or_tcp_socket(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display:
        assert inside(display, "xdpyinfo").returncode == 0
        # The user's cookie, or none, does not open it; nor does its cookie open the user's.
        for cookie in (str(xserver.xauthority), "/nonexistent"):
            other = subprocess.run(["xdpyinfo"], capture_output=True, text=True, timeout=10,
                                   env={**inside_env(display), "XAUTHORITY": cookie})
            assert other.returncode != 0, other.stdout[:200]
        to_user = subprocess.run(["xdpyinfo"], capture_output=True, text=True, timeout=10,
                                 env={**inside_env(display), "DISPLAY": xserver.display})
        assert to_user.returncode != 0
        sockets = Path("/proc/net/unix").read_text()
        # Its abstract name is held, never listened on (the launcher's: see the next test).
        listening = {line.split()[-1] for line in sockets.splitlines()[1:]
                     if len(line.split()) == 8 and line.split()[3] == "00010000"}
        assert f"@/tmp/.X11-unix/X{display.display.number}" not in listening
        assert f"/tmp/.X11-unix/X{display.display.number}" in listening
        port = f":{6000 + display.display.number:04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            assert port not in Path(table).read_text()
        extensions = inside(display, "xdpyinfo", "-queryExtensions").stdout
        assert "XTEST" not in extensions and "GLX" not in extensions


def test_no_process_can_take_its_abstract_name_to_sit_between_the_sandbox_and_it(
        xserver: XServer, tmp_path: Path) -> None:
    """A client inside tries @/tmp/.X11-unix/XN before the socket file; with network = "host"
    that name is the host's. Another user's process that bound it would relay the sandbox's
    connections (its cookie, keys and pictures): the launcher holds the name, and a client is
    refused there at once, and goes on to the file."""
    import errno
    import socket

    with nested(xserver, tmp_path / "x11") as display:
        name = f"\0/tmp/.X11-unix/X{display.display.number}"
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with squatter, pytest.raises(OSError) as taken:
            squatter.bind(name)
        assert taken.value.errno == errno.EADDRINUSE
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client, pytest.raises(ConnectionRefusedError):
            client.connect(name)
        assert inside(display, "xdpyinfo").returncode == 0  # libxcb: the name, then the file


def test_a_keyboard_grab_inside_gets_none_of_what_the_user_types_elsewhere(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            connection(display.access) as attacker:
        victim = victim_window(host)
        key_presses(host, victim)
        grab = attacker.screen().root.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync,
                                                    X.CurrentTime)
        attacker.sync()
        type_keys(host, "secret")
        time.sleep(0.3)
        host.sync()
        assert key_presses(host, victim) == len("secret")
        logged = 0
        while attacker.pending_events():
            logged += attacker.next_event().type == X.KeyPress
    assert grab == X.GrabSuccess and logged == 0


def test_the_users_clipboard_cut_buffer_and_windows_are_out_of_reach(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host:
        victim = victim_window(host)
        copied = subprocess.Popen(["xclip", "-selection", "clipboard"], stdin=subprocess.PIPE,
                                  env=xserver.client_env(), text=True)
        assert copied.stdin is not None
        copied.stdin.write("hunter2")
        copied.stdin.close()
        host.screen().root.change_property(host.intern_atom("CUT_BUFFER0"), 31, 8, b"hunter2")
        host.sync()
        time.sleep(0.3)
        assert subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=xserver.client_env(),
                              capture_output=True, text=True, timeout=10).stdout == "hunter2"
        for selection in ("clipboard", "primary"):
            read = inside(display, "xclip", "-o", "-selection", selection)
            assert "hunter2" not in read.stdout
        buffer = inside(display, "xprop", "-root", "CUT_BUFFER0").stdout
        assert "hunter2" not in buffer
        assert inside(display, "xdotool", "search", "--name", "host terminal").stdout == ""
        assert str(victim.id) not in inside(display, "xwininfo", "-root", "-tree").stdout
        copied.kill()
        copied.wait()


def test_the_users_pointer_and_screen_saver_settings_are_out_of_reach(
        xserver: XServer, tmp_path: Path) -> None:
    """Pointer acceleration, button mapping and the screen-saver timeout (0 turns off the
    blanking screen lockers use) set from inside change the sandbox's own server only."""
    require_programs("xset", "xmodmap")
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            connection(display.access) as own:
        def settings(connection: Any) -> tuple[Any, ...]:
            control = connection.get_pointer_control()
            saver = connection.get_screen_saver()
            return (control.accel_num, control.accel_denom, control.threshold, saver.timeout,
                    tuple(connection.get_pointer_mapping()))

        before, own_before = settings(host), settings(own)
        for argv in (("xset", "m", "17/2", "3"), ("xset", "s", "0"),
                     ("xmodmap", "-e", "pointer = 3 2 1")):
            done = inside(display, *argv)
            assert done.returncode == 0, done.stderr
        assert settings(own) != own_before  # they took, on the sandbox's own server
        assert settings(host) == before


@contextlib.contextmanager
def world_readable_segment(secret: bytes) -> Iterator[int]:
    """A System V shared memory segment of the host's, mode 0644, holding secret: as programs
    that share images with their X server make them (some with modes that let others read)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(0, 4096, 0o1000 | 0o644)  # IPC_PRIVATE, IPC_CREAT
    assert shmid >= 0, ctypes.get_errno()
    address = libc.shmat(shmid, None, 0)
    try:
        ctypes.memmove(address, secret, len(secret))
        yield shmid
    finally:
        libc.shmdt(ctypes.c_void_p(address))
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def shm_attack(env: dict[str, str], shmid: int, uid: int = 4242) -> str:
    """tests/integration/xshm_attack.py as uid, by default 4242, a UID of nobody's (as a
    sandbox's is); neither the segment's owner nor root."""
    attack = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
         str(Path(__file__).with_name("xshm_attack.py")), str(shmid)],
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True,
        timeout=30, check=False)
    assert attack.returncode == 0, attack.stderr
    return attack.stdout.strip()


def test_the_host_s_shared_memory_is_out_of_reach_through_the_nested_server(
        xserver: XServer, tmp_path: Path) -> None:
    """Xephyr runs in the host's IPC namespace: a segment id the sandbox names through MIT-SHM
    would be one of the host's. Against the user's own server (a client with the user's cookie)
    the attack reads the segment; the nested server does not offer MIT-SHM."""
    secret = b"the host's secret " * 3
    # The attacker's copies of the cookies, where UID 4242 can read them.
    cookies = Path(tempfile.mkdtemp(prefix="shm-attack-", dir="/tmp"))
    try:
        with world_readable_segment(secret) as shmid, \
                nested(xserver, tmp_path / "x11") as display:
            own, nested_cookie = cookies / "user", cookies / "nested"
            own.write_bytes(xserver.xauthority.read_bytes())
            nested_cookie.write_bytes(Path(str(display.access.cookie_file())).read_bytes())
            # The user's server's socket may be the user's alone (Xwayland's, mode 0755): the
            # control attack runs as its owner then, still not the segment's (root's).
            owner = (X11_SOCKET_DIR / f"X{xserver.number}").stat().st_uid or 4242
            os.chown(own, owner, owner)
            for path in (cookies, nested_cookie):
                os.chown(path, 4242, 4242)
            cookies.chmod(0o755)
            read = shm_attack({**xserver.client_env(), "XAUTHORITY": str(own)}, shmid, owner)
            assert read.startswith("read ") and secret[:16].hex() in read, read
            assert shm_attack({**inside_env(display), "XAUTHORITY": str(nested_cookie)},
                              shmid) == "absent"
    finally:
        shutil.rmtree(cookies)


def test_two_sandboxes_cannot_reach_each_other(xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "a") as first, nested(xserver, tmp_path / "b") as second, \
            x_client(xserver) as host, connection(first.access) as attacker:
        assert first.display.number != second.display.number
        crossed = subprocess.run(["xdpyinfo"], capture_output=True, text=True, timeout=10,
                                 env={**inside_env(first), "DISPLAY": second.display.name})
        assert crossed.returncode != 0
        # The second sandbox's app has the user's focus, and the user types into it; a grab
        # in the first gets none of it.
        with running_app(second, "victim"):
            wait_until(second.mapped.is_set, "the second sandbox's window mapped")
            attacker.screen().root.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync,
                                                 X.CurrentTime)
            attacker.sync()
            host_window(host, second).set_input_focus(X.RevertToParent, X.CurrentTime)
            host.sync()
            time.sleep(0.3)
            type_keys(host, "secret")
            time.sleep(0.3)
            logged = 0
            while attacker.pending_events():
                logged += attacker.next_event().type == X.KeyPress
            assert logged == 0


def test_its_window_appears_with_the_apps_and_carries_the_profiles_class_and_the_apps_title(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host:
        window = host_window(host, display)
        time.sleep(0.5)
        assert window.get_attributes().map_state == X.IsUnmapped  # nothing to show yet
        with running_app(display, "page one"):
            wait_until(lambda: window.get_attributes().map_state == X.IsViewable,
                       "the window mapped with the app's")
            assert window.get_wm_class() == (LOOK.instance, LOOK.klass)
            wait_until(lambda: window.get_wm_name() == "demo (sandbox): page one",
                       "the app's title behind the sandbox's name")
            # The app renames its window, and claims to be another program: the title
            # follows, the class stays the profile's.
            assert inside(display, "xdotool", "search", "--name", "page one", "set_window",
                          "--name", "Password manager\x1b[2J", "--class", "keepassxc",
                          "--classname", "keepassxc").returncode == 0
            wait_until(lambda: window.get_wm_name() == "demo (sandbox): Password manager[2J",
                       "the new title, its control character dropped")
            assert window.get_wm_class() == (LOOK.instance, LOOK.klass)


def test_the_apps_window_fills_the_window_and_follows_its_size(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            connection(display.access) as viewer, running_app(display, "resizable"):
        wait_until(display.mapped.is_set, "the window mapped")

        def app_size() -> tuple[int, int]:
            for child in viewer.screen().root.query_tree().children:
                attributes = child.get_attributes()
                if attributes.map_state == X.IsViewable:
                    geometry = child.get_geometry()
                    return geometry.width, geometry.height
            return (0, 0)

        wait_until(lambda: app_size() == (LOOK.width, LOOK.height), "the app fills it")
        host_window(host, display).configure(width=900, height=700)
        host.sync()
        wait_until(lambda: app_size() == (900, 700), "the app follows the resize")


def test_the_user_types_into_the_app_and_its_dialog_once_its_window_has_the_focus(
        xserver: XServer, tmp_path: Path) -> None:
    """The user's typing reaches the app once the user focuses its window. Dialogs (windows
    transient for the main one) are placed and sized as the app asks, get the keyboard when
    they map, and give it back to the main window when they go."""
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            connection(display.access) as app:
        screen = app.screen()
        main = screen.root.create_window(0, 0, 200, 100, 0, screen.root_depth,
                                         event_mask=X.KeyPressMask)
        main.map()
        app.sync()
        wait_until(display.mapped.is_set, "the main window mapped")
        host_window(host, display).set_input_focus(X.RevertToParent, X.CurrentTime)
        host.sync()
        wait_until(lambda: main.get_geometry().width == LOOK.width, "the main window fills it")
        time.sleep(0.3)
        type_keys(host, "hello")
        time.sleep(0.3)
        assert key_presses(app, main) == len("hello")
        dialog = screen.root.create_window(100, 80, 300, 120, 0, screen.root_depth,
                                           event_mask=X.KeyPressMask)
        dialog.set_wm_transient_for(main)
        dialog.map()
        app.sync()
        wait_until(lambda: app.get_input_focus().focus == dialog, "the dialog has the keys")
        time.sleep(0.3)
        type_keys(host, "ok")
        time.sleep(0.3)
        assert key_presses(app, dialog) == 2
        geometry = dialog.get_geometry()
        assert (geometry.x, geometry.y, geometry.width, geometry.height) == (100, 80, 300, 120)
        dialog.unmap()
        app.sync()
        wait_until(lambda: app.get_input_focus().focus == main, "the main window has them back")
        key_presses(app, main)
        type_keys(host, "back")
        time.sleep(0.3)
        assert key_presses(app, main) == len("back")


def test_the_users_keyboard_layout_is_the_apps(xserver: XServer, tmp_path: Path) -> None:
    # The key right of T is Y on a US keyboard, Z on a German one (keycode 29, evdev).
    assert subprocess.run(["setxkbmap", "-layout", "de"], env=xserver.client_env(),
                          timeout=10).returncode == 0
    with nested(xserver, tmp_path / "x11") as display:
        # Copied as the nested server starts, beside the app's own start.
        def german() -> bool:
            with connection(display.access) as app:
                return bool(app.keycode_to_keysym(29, 0) == XK.XK_z)

        wait_until(german, "the German layout inside", seconds=5)


def test_it_ends_with_its_launch(xserver: XServer, tmp_path: Path) -> None:
    with x_client(xserver) as host:
        with nested(xserver, tmp_path / "x11") as display:
            process, number, window = display.process, display.display.number, display.window.id
        assert process.poll() is not None
        assert not Path(f"/tmp/.X11-unix/X{number}").exists()
        alive = subprocess.run(["xdpyinfo"], env={**os.environ, "DISPLAY": f":{number}"},
                               capture_output=True, timeout=10)
        assert alive.returncode != 0
        with pytest.raises(error.BadDrawable):
            host.create_resource_object("window", window).get_geometry()


@contextlib.contextmanager
def host_copies(server: XServer, text: str) -> Iterator[None]:
    """The user copies text in a program of the desktop's (xclip, which owns the clipboard
    until the context ends)."""
    owner = subprocess.Popen(["xclip", "-selection", "clipboard", "-i", "-quiet"],
                             env=server.client_env(), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    assert owner.stdin is not None
    owner.stdin.write(text)
    owner.stdin.close()
    try:
        wait_until(lambda: host_paste(server) == text, "the copy on the desktop")
        yield
    finally:
        owner.kill()
        owner.wait()


def inside_paste(display: NestedDisplay) -> str:
    return inside(display, "timeout", "3", "xclip", "-o", "-selection", "clipboard").stdout


def host_paste(server: XServer) -> str:
    return subprocess.run(["timeout", "3", "xclip", "-o", "-selection", "clipboard"],
                          env=server.client_env(), capture_output=True, text=True,
                          timeout=10).stdout


def inside_copies(display: NestedDisplay, text: str) -> subprocess.Popen[str]:
    """A program inside copies text (xclip, in the foreground: it owns the clipboard until
    killed); once it does."""
    owner = subprocess.Popen(["xclip", "-selection", "clipboard", "-i", "-quiet"],
                             env=inside_env(display), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    assert owner.stdin is not None
    owner.stdin.write(text)
    owner.stdin.close()
    wait_until(lambda: inside_paste(display) == text, "the copy inside")
    return owner


@contextlib.contextmanager
def shown(display: NestedDisplay, wait_out_mapping: bool = True) -> Iterator[None]:
    """An app's window inside, mapped; then (wait_out_mapping) long enough that a focus is
    no longer the mapping's."""
    with running_app(display, "app"):
        wait_until(display.mapped.is_set, "the window mapped")
        if wait_out_mapping:
            time.sleep(1.2)
        yield


def focus(host: Any, window: Any) -> None:
    window.set_input_focus(X.RevertToParent, X.CurrentTime)
    host.sync()
    time.sleep(0.3)


def test_the_users_clipboard_crosses_in_only_when_the_user_focuses_the_sandbox(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            shown(display):
        victim = victim_window(host)  # the user works in another window
        with host_copies(xserver, "hunter2"):
            assert inside_paste(display) == ""
            focus(host, host_window(host, display))
            wait_until(lambda: inside_paste(display) == "hunter2", "the paste inside")
        focus(host, victim)
        with host_copies(xserver, "copied later"):
            time.sleep(0.5)
            # Copied while the sandbox had no focus: still the text from before.
            assert inside_paste(display) == "hunter2"


def test_a_focus_the_sandbox_got_by_mapping_its_window_brings_it_nothing(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            host_copies(xserver, "hunter2"), shown(display, wait_out_mapping=False):
        focus(host, host_window(host, display))  # as a desktop focuses a new window
        time.sleep(0.5)
        assert inside_paste(display) == ""


def test_what_is_copied_inside_reaches_the_desktop_only_while_the_sandbox_has_the_focus(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            shown(display), host_copies(xserver, "the user's"):
        victim = victim_window(host)
        focus(host, victim)
        sneaked = inside_copies(display, "copied behind the user's back")
        time.sleep(0.8)
        assert host_paste(xserver) == "the user's"
        sneaked.kill()
        sneaked.wait()
        focus(host, host_window(host, display))
        copied = inside_copies(display, "copied inside")
        try:
            wait_until(lambda: host_paste(xserver) == "copied inside", "the paste outside")
        finally:
            copied.kill()
            copied.wait()


def test_a_profile_can_keep_the_clipboard_from_crossing(
        xserver: XServer, tmp_path: Path) -> None:
    none = Directions(inward=False, outward=False)
    with nested(xserver, tmp_path / "x11", none) as display, x_client(xserver) as host, \
            shown(display), host_copies(xserver, "hunter2"):
        focus(host, host_window(host, display))
        assert inside_paste(display) == ""
        copied = inside_copies(display, "copied inside")
        time.sleep(0.8)
        copied.kill()
        copied.wait()
        assert host_paste(xserver) == "hunter2"


def _launchers_window_inside(app: Any) -> Any:
    """The launcher's own window on the nested server (unmapped, 1x1, input only): the one
    that owns the clipboard's offers there."""
    for child in app.screen().root.query_tree().children:
        attributes, geometry = child.get_attributes(), child.get_geometry()
        if (attributes.win_class, geometry.width, attributes.map_state) == (
                X.InputOnly, 1, X.IsUnmapped):
            return child
    raise AssertionError("no window of the launcher's inside")


def _forge(app: Any, destination: Any, raw: bytes) -> None:
    """A SendEvent of 32 bytes of the sandbox's choosing, to the creator of destination."""
    from Xlib.protocol import event, request

    request.SendEvent(display=app.display, onerror=error.CatchError(), propagate=False,
                      destination=destination.id, event_mask=0,
                      event=event.AnyEvent(binarydata=raw.ljust(32, b"\0")))
    app.sync()


def test_forged_events_and_a_destroyed_window_end_neither_the_launchers_thread_nor_a_paste(
        xserver: XServer, tmp_path: Path) -> None:
    with nested(xserver, tmp_path / "x11") as display, x_client(xserver) as host, \
            connection(display.access) as app, shown(display), \
            host_copies(xserver, "the user's"):
        window = host_window(host, display)
        owner = _launchers_window_inside(app)
        xfixes = app.query_extension("XFIXES").first_event
        # An XFIXES event of a kind python-xlib has no class for; a MapNotify naming no window.
        _forge(app, owner, struct.pack("=BBH", xfixes, 77, 0))
        _forge(app, owner, struct.pack("=BxHIII", X.MapNotify, 0, 0x7ffffff, 0x7ffffff, 0))
        # A text of the sandbox's on the launcher's window, and an answer nobody asked for.
        atom = app.intern_atom("SANDBOXAPP_CLIPBOARD")
        owner.change_property(atom, app.intern_atom("UTF8_STRING"), 8, b"forged")
        clipboard = app.intern_atom("CLIPBOARD")
        focus(host, window)
        _forge(app, owner, struct.pack("=BxHIIIII", X.SelectionNotify, 0, 0, owner.id,
                                       clipboard, app.intern_atom("UTF8_STRING"), atom))
        time.sleep(0.5)
        assert host_paste(xserver) != "forged"
        # Its window destroyed, then an answer naming it.
        owner.destroy()
        app.sync()
        _forge(app, app.screen().root, struct.pack("=BxHIIIII", X.SelectionNotify, 0, 0,
                                                    owner.id, clipboard, 0, atom))
        time.sleep(0.5)
        assert display.thread is not None and display.thread.is_alive(), display.error
        # The launcher still follows the app: a new title shows.
        assert inside(display, "xdotool", "search", "--name", "app", "set_window", "--name",
                      "still followed").returncode == 0
        wait_until(lambda: window.get_wm_name() == "demo (sandbox): still followed",
                   "the title followed after the attacks")
