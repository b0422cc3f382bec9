"""The shipped Firefox profile in a GNOME Wayland session (mutter run headless as a plain user):
drawn on the compositor itself, with no X display, and quitting by itself (opt-in: slow)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandboxapp.paths import SHIPPED_PROFILE_DIR
from tests.harness import Compositor, XServer, wayland_compositor
from tests.integration.launching import REPO, Session
from tests.integration.test_firefox import (
    STOP_WAYS,
    firefox_profile,
    shut_down_by_itself,
    stop_by,
)


def clients_of(socket_path: Path) -> dict[int, str]:
    """The processes connected to a listening Unix socket: pid -> name (ss's view)."""
    lines = [line.split() for line in subprocess.run(
        ["ss", "-xpH"], capture_output=True, text=True, check=True).stdout.splitlines()]
    # u_str STATE RECV SEND LOCAL INODE PEER PEER-INODE users:(("NAME",pid=PID,fd=FD))
    accepted = {fields[7] for fields in lines if len(fields) > 7 and fields[4] == str(socket_path)}
    found: dict[int, str] = {}
    for fields in lines:
        if len(fields) > 8 and fields[5] in accepted and fields[8].startswith('users:(("'):
            name = fields[8].split('"')[1]
            found[int(fields[8].split("pid=")[1].split(",")[0])] = name
    return found


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def logging_firefox(tmp_path: Path, image_dir: Path, xserver: XServer,
                    mutter: Compositor) -> tuple[Session, dict[str, str]]:
    """The shipped Firefox profile for the compositor's user (its socket is theirs), with
    Firefox's own log of its window (what the compositor told it of its toplevel) on its error
    output; (the session, its environment in the compositor's session)."""
    session = Session(tmp_path, image_dir, xserver, sudo_uid=mutter.user.uid)
    session.profiles.mkdir(parents=True)
    shipped = (SHIPPED_PROFILE_DIR / "firefox.toml").read_text()
    # The shipped profile has an env table of its own; the log joins it (a second `env` key
    # would be a TOML error).
    shipped_env = 'env = { GTK_USE_PORTAL = "1" }'
    assert shipped.count(shipped_env) == 1, "the shipped Firefox profile's env changed"
    (session.profiles / "firefox.toml").write_text(shipped.replace(
        shipped_env, 'env = { GTK_USE_PORTAL = "1", MOZ_LOG = "Widget:4" }'))
    return session, {**session.env(), "XDG_RUNTIME_DIR": str(mutter.user.runtime),
                     "WAYLAND_DISPLAY": mutter.socket.name}


@pytest.mark.slow
def test_firefox_draws_on_gnome_s_compositor_itself_with_no_x_and_quits_by_itself(
        tmp_path: Path, firefox_image_dir: Path, xserver: XServer) -> None:
    with wayland_compositor(tmp_path, "mutter") as mutter:
        session, env = logging_firefox(tmp_path, firefox_image_dir, xserver, mutter)
        dry = session.sandboxapp("run", "--dry-run", "firefox", env=env)
        assert dry.returncode == 0, dry.stderr
        assert f"Wayland:  the socket {mutter.socket}, bound alone" in dry.stdout
        assert "X11:      none" in dry.stdout

        launch = subprocess.Popen([sys.executable, "-m", "sandboxapp", "run", "firefox", "--",
                                   "about:blank"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        said: list[str] = []
        assert launch.stderr is not None
        reader = threading.Thread(target=lambda: said.extend(launch.stderr or []), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 90
            firefox: list[int] = []
            while time.monotonic() < deadline and not (
                    firefox and any("OnShellConfigureEvent" in line for line in said)):
                assert launch.poll() is None, "".join(said)
                firefox = [pid for pid, name in clients_of(mutter.socket).items()
                           if name == "firefox-esr"]
                time.sleep(0.5)
            # Its connection is to the compositor, and the compositor configured its window.
            assert firefox, "".join(said[-30:])
            configured = [line for line in said if "OnShellConfigureEvent" in line]
            assert configured and "[0 x 0]" not in configured[-1], configured
            # No X: no display named, no nested X server started for it.
            inside = environment_of(firefox[0])
            assert "DISPLAY" not in inside
            assert inside["WAYLAND_DISPLAY"] == "/run/sandboxapp/wayland-0"
            assert subprocess.run(["pgrep", "-x", "Xephyr"], check=False).returncode == 1
            launch.terminate()
            assert launch.wait(timeout=60) == 143, "".join(said[-30:])
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
        reader.join(timeout=5)
        # Its connection ended with it; it shut itself down (asked as a logout does).
        assert not [name for name in clients_of(mutter.socket).values()
                    if name == "firefox-esr"]
        assert shut_down_by_itself(firefox_profile(session))


@pytest.mark.slow
def test_every_way_of_stopping_firefox_on_wayland_is_its_own_quit(
        tmp_path: Path, firefox_image_dir: Path, xserver: XServer) -> None:
    """Eight cycles of launch, configured window, stop at once on GNOME's compositor: Ctrl-C to
    the launcher's process group, `sandboxapp stop`, SIGTERM and SIGHUP, twice each. Every stop
    is Firefox's own shutdown (asked through the sandbox's session manager), never a crash, and
    every launch shows its window again."""
    with wayland_compositor(tmp_path, "mutter") as mutter:
        session, env = logging_firefox(tmp_path, firefox_image_dir, xserver, mutter)
        ways = list(STOP_WAYS)
        for cycle in range(8):
            launch = subprocess.Popen(
                [sys.executable, "-m", "sandboxapp", "run", "firefox", "--", "about:blank"],
                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                process_group=0)
            said: list[str] = []
            reader = threading.Thread(target=said.extend, args=(launch.stderr or [],),
                                      daemon=True)
            reader.start()
            way = ways[cycle % len(ways)]
            try:
                deadline = time.monotonic() + 90
                while not any("OnShellConfigureEvent" in line for line in said):
                    assert launch.poll() is None, f"cycle {cycle}: " + "".join(said[-30:])
                    assert time.monotonic() < deadline, f"cycle {cycle}: no window"
                    time.sleep(0.2)
                time.sleep(1)
                expected = stop_by(way, launch, session, env)
                assert launch.wait(timeout=60) == expected, "".join(said[-30:])
            finally:
                if launch.poll() is None:
                    launch.kill()
                    launch.wait()
            reader.join(timeout=5)
            assert shut_down_by_itself(firefox_profile(session)), (
                f"cycle {cycle} ({way}): Firefox crashed")
