"""The display door, attacked from inside: a sandbox with x11 = true has an X server of its own,
nested in the user's display (host/nested.py; attacked at the server's own boundary in
test_nested_display.py).

On the host a client of the user's (the user's terminal, say) has a window with the input
focus. From the sandbox: log the keys typed into it (xev), type into it (xdotool, XTEST), read
its pixels (xwd). With x11 = true all three fail while the sandbox's own window shows on the
desktop and takes the user's typing; with x11 = "trusted" they succeed, so the tests can fail.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from Xlib import XK, X
from Xlib.ext import xtest

from tests.harness import x_client, x_server
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    TRUSTED_SANDBOX,
    Session,
    wait_for_file,
    write_variant,
)

MODES = {"isolated": FULL_SANDBOX, "trusted": TRUSTED_SANDBOX}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The display access the attacks are made with (a server without the SECURITY extension
    has only "isolated": test_gnome_xwayland.py)."""
    return str(request.param)


def victim_window(connection: Any) -> Any:
    """A window of the host's with the input focus, listening for its keys."""
    screen = connection.screen()
    window = screen.root.create_window(0, 0, 300, 200, 0, screen.root_depth,
                                       background_pixel=screen.white_pixel,
                                       event_mask=X.KeyPressMask | X.ExposureMask)
    window.set_wm_name("host terminal")
    window.map()
    connection.sync()
    time.sleep(0.2)
    window.set_input_focus(X.RevertToParent, X.CurrentTime)
    connection.sync()
    return window


def type_keys(connection: Any, text: str) -> None:
    """What the user types, through the X server's XTEST as a keyboard would."""
    for char in text:
        keycode = connection.keysym_to_keycode(XK.string_to_keysym(char))
        xtest.fake_input(connection, X.KeyPress, keycode)
        xtest.fake_input(connection, X.KeyRelease, keycode)
        connection.sync()
        time.sleep(0.02)


def key_presses(connection: Any, window: Any) -> int:
    count = 0
    while connection.pending_events():
        event = connection.next_event()
        if event.type == X.KeyPress and event.window.id == window.id:
            count += 1
    return count


def run_in_sandbox(session: Session, mode: str, script: str) -> subprocess.Popen[str]:
    """A launch of script in a sandbox of the given display access."""
    profile = write_variant(session.profiles, ["/bin/sh", "-c", script], MODES[mode])
    return session.start(str(profile))


def finish(launch: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = launch.communicate(timeout=60)
    return out, err


def test_keys_typed_into_another_window_cannot_be_logged(session: Session, mode: str) -> None:
    assert session.xserver is not None
    with x_client(session.xserver) as host:
        victim = victim_window(host)
        launch = run_in_sandbox(
            session, mode, f"(timeout 4 xev -id {victim.id} -event keyboard > /root/data/log "
                           "2>&1 &); sleep 1; touch /root/data/ready; sleep 3.5")
        wait_for_file(session.persist_dir() / "ready", launch)
        key_presses(host, victim)
        type_keys(host, "secret")
        time.sleep(0.3)
        # The keys did reach the host's window: there was something to log.
        assert key_presses(host, victim) == len("secret")
        finish(launch)
    logged = (session.persist_dir() / "log").read_text(errors="replace")
    presses = logged.count("KeyPress event")
    if mode == "trusted":
        assert presses == 6, logged
    else:
        assert presses == 0, logged


def test_keys_cannot_be_typed_into_another_window(session: Session, mode: str) -> None:
    assert session.xserver is not None
    with x_client(session.xserver) as host:
        victim = victim_window(host)
        key_presses(host, victim)
        # A client of the user's can type into it: the door is there for one let in.
        type_keys(host, "ok")
        time.sleep(0.3)
        assert key_presses(host, victim) == 2
        launch = run_in_sandbox(session, mode, "xdotool type --delay 20 injected; echo $?")
        out, err = finish(launch)
        time.sleep(0.3)
        host.sync()
        received = key_presses(host, victim)
    if mode == "trusted":
        assert received == len("injected"), (out, err)
    else:
        assert received == 0, (out, err)


def test_another_windows_pixels_cannot_be_read(session: Session, mode: str) -> None:
    assert session.xserver is not None
    with x_client(session.xserver) as host:
        victim = victim_window(host)
        # A client of the user's reads its pixels: the door is there for one let in.
        control = subprocess.run(["xwd", "-id", str(victim.id), "-silent"],
                                 env=session.xserver.client_env(), capture_output=True,
                                 check=False)
        assert len(control.stdout) > 300 * 200 * 3, control.stderr
        launch = run_in_sandbox(session, mode,
                                f"xwd -id {victim.id} -silent > /root/data/pixels; true")
        finish(launch)
    size = (session.persist_dir() / "pixels").stat().st_size
    if mode == "trusted":
        assert size > 300 * 200 * 3, size
    else:
        assert size == 0, size


def find_window(connection: Any, title: str) -> Any | None:
    """The sandbox's window on the user's display, by the title the app gave its own."""
    pending = [connection.screen().root]
    while pending:
        window = pending.pop()
        with contextlib.suppress(Exception):
            if (window.get_wm_name() or "").endswith(f": {title}"):
                return window
        with contextlib.suppress(Exception):
            pending.extend(window.query_tree().children)
    return None


def wait_for_window(session: Session, connection: Any, title: str,
                    launch: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + 20
    while (window := find_window(connection, title)) is None:
        assert time.monotonic() < deadline, "the sandbox's window never mapped"
        assert launch.poll() is None, launch.communicate()
        time.sleep(0.1)
    return window


def give_focus(connection: Any, window: Any) -> None:
    """The user clicks the window (once its mapping's own focus is over)."""
    time.sleep(1.2)
    window.set_input_focus(X.RevertToParent, X.CurrentTime)
    connection.sync()
    time.sleep(0.3)


def test_the_sandbox_shows_its_own_window_and_gets_the_users_typing(session: Session) -> None:
    assert session.xserver is not None
    launch = run_in_sandbox(session, "isolated",
                            "(timeout 6 xev -name sandboxed-window > /root/data/events 2>&1 &);"
                            " sleep 6.5")
    with x_client(session.xserver) as host:
        window = wait_for_window(session, host, "sandboxed-window", launch)
        # The class is the profile's: the menu entry's StartupWMClass groups it.
        assert window.get_wm_class() == (f"sandboxapp-{NAME}", f"sandboxapp-{NAME}")
        assert window.get_wm_name() == f"{NAME} (sandbox): sandboxed-window"
        give_focus(host, window)
        type_keys(host, "hello")
        finish(launch)
    events = (session.persist_dir() / "events").read_text(errors="replace")
    assert "MapNotify event" in events
    assert events.count("KeyPress event") == 5, events


def test_the_sandboxs_display_ends_with_the_app(session: Session, tmp_path: Path) -> None:
    """A copy of the sandbox's cookie and display admits a client while the app runs; the
    app's exit ends the display, and that client with it."""
    assert session.xserver is not None
    launch = run_in_sandbox(session, "isolated",
                            "cp $XAUTHORITY /root/data/cookie; echo $DISPLAY > /root/data/display;"
                            " touch /root/data/ready; "
                            "while [ ! -e /root/data/go ]; do sleep 0.05; done")
    wait_for_file(session.persist_dir() / "ready", launch)
    cookie = session.persist_dir() / "cookie"
    display = (session.persist_dir() / "display").read_text().strip()
    assert display != session.xserver.display
    env = {**session.xserver.client_env(), "XAUTHORITY": str(cookie), "DISPLAY": display}
    # The sandbox's cookie does not open the user's display.
    mine = subprocess.run(["xdpyinfo"], env={**env, "DISPLAY": session.xserver.display},
                          capture_output=True, text=True, check=False)
    assert mine.returncode != 0
    watcher = subprocess.Popen(["xev", "-root"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert watcher.poll() is None, watcher.communicate()
        (session.persist_dir() / "go").touch()
        assert finish(launch) is not None and launch.returncode == 0
        assert watcher.wait(timeout=5) != 0  # its server is gone
    finally:
        if watcher.poll() is None:
            watcher.kill()
    later = subprocess.run(["xdpyinfo"], env=env, capture_output=True, text=True, check=False)
    assert later.returncode != 0
    assert not Path(f"/tmp/.X11-unix/X{display.lstrip(':')}").exists()


def test_a_display_without_the_security_extension_runs_the_sandbox_isolated(
        session: Session, tmp_path: Path) -> None:
    """Xwayland, GNOME's X server, has no SECURITY extension: the nested server does not need
    it."""
    (tmp_path / "plain").mkdir()
    with x_server(tmp_path / "plain", ["-extension", "SECURITY"]) as plain:
        session.xserver = plain
        profile = write_variant(session.profiles, ["xdpyinfo"], FULL_SANDBOX)
        result = session.run(str(profile))
        doctor = session.sandboxapp("doctor")
    assert result.returncode == 0, result.stderr
    assert "name of display:    :" in result.stdout
    assert any(line.startswith("ok") and "X isolation" in line and "of their own" in line
               for line in doctor.stdout.splitlines()), doctor.stdout
    assert not list(session.run_dir.glob("*.json"))


def test_text_copied_on_the_host_pastes_into_the_sandbox_once_the_user_focuses_it(
        session: Session) -> None:
    assert session.xserver is not None
    # The user copies in a program of the desktop's: xclip owns the clipboard and hands its
    # text to whoever pastes.
    owner = subprocess.Popen(["xclip", "-selection", "clipboard", "-i"],
                             env=session.xserver.client_env(), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert owner.stdin is not None
        owner.stdin.write("copied on the host")
        owner.stdin.close()
        time.sleep(0.5)
        launch = run_in_sandbox(
            session, "isolated",
            "xlogo -title paste-here & X=$!; timeout 2 xclip -o -selection clipboard "
            "> /root/data/before; sleep 4; timeout 3 xclip -o -selection clipboard "
            "> /root/data/pasted; kill $X")
        with x_client(session.xserver) as host:
            window = wait_for_window(session, host, "paste-here", launch)
            give_focus(host, window)
            finish(launch)
    finally:
        if owner.poll() is None:
            owner.kill()
    assert (session.persist_dir() / "before").read_text() == ""
    assert (session.persist_dir() / "pasted").read_text() == "copied on the host"


def test_text_copied_in_the_sandbox_reaches_the_host(session: Session, mode: str) -> None:
    """Isolated, while the user has the sandbox's window focused (test_nested_display.py
    shows that it does not otherwise)."""
    assert session.xserver is not None
    launch = run_in_sandbox(session, mode,
                            "xlogo -title copy-here & X=$!; sleep 3; echo -n 'copied in the "
                            "sandbox' | timeout 8 xclip -selection clipboard -i -loops 1 & "
                            "sleep 1; touch /root/data/ready; sleep 4; kill $X")
    if mode == "isolated":
        with x_client(session.xserver) as host:
            give_focus(host, wait_for_window(session, host, "copy-here", launch))
    wait_for_file(session.persist_dir() / "ready", launch)
    time.sleep(0.5)
    pasted = subprocess.run(["timeout", "5", "xclip", "-o", "-selection", "clipboard"],
                            env=session.xserver.client_env(), capture_output=True, text=True,
                            check=False)
    finish(launch)
    assert pasted.stdout == "copied in the sandbox", pasted


def test_what_the_nested_display_leaves_out(session: Session) -> None:
    """The extensions the sandbox's own server offers, against the user's (which a trusted
    sandbox sees): no XTEST, GLX, XVideo or MIT-SHM inside."""
    seen = {}
    for mode in MODES:
        launch = run_in_sandbox(session, mode, "xdpyinfo -queryExtensions | "
                                               "sed -n 's/^    \\([A-Za-z].*\\)  (opcode.*/\\1/p'")
        out, err = finish(launch)
        assert launch.returncode == 0, err
        seen[mode] = {line.strip() for line in out.splitlines() if line.strip()}
    assert {"XTEST", "GLX", "XVideo", "MIT-SHM"} & seen["isolated"] == set()
    assert {"XTEST", "MIT-SHM"} <= seen["trusted"]
    assert {"RANDR", "RENDER", "XKEYBOARD"} <= seen["isolated"]
