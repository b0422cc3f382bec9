"""The Wayland door: what the user's compositor offers a sandbox, asked of real compositors run
headless as a plain user (GNOME's mutter, sway 1.7, weston), and the way a sandbox may reach
each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.host.wayland import (
    ALLOWED_GLOBALS,
    WaylandPath,
    compositor_socket,
    probe,
)
from tests.harness import Compositor, wayland_compositor
from tests.integration.launching import Session
from tests.integration.test_firefox_wayland import clients_of

# What sway 1.7 offers every client and no sandbox may have: the screen's pixels, the
# clipboard at any time, faked input, an input method's view of every key, surfaces over
# every window (a fake lock screen).
SWAY_PRIVILEGED = {"zwlr_screencopy_manager_v1", "zwlr_data_control_manager_v1",
                   "zwp_virtual_keyboard_manager_v1", "zwlr_virtual_pointer_manager_v1",
                   "zwp_input_method_manager_v2", "zwlr_layer_shell_v1"}


@pytest.fixture(params=["mutter", "sway", "weston"])
def compositor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Compositor]:
    with wayland_compositor(tmp_path, str(request.param)) as running:
        yield running


def test_each_compositor_gets_the_path_its_globals_allow(compositor: Compositor) -> None:
    found = probe(compositor_socket(compositor.client_env()) or Path("/nonexistent"))
    assert found.socket == compositor.socket
    assert {"wl_compositor", "wl_shm", "xdg_wm_base"} <= found.offered
    path, why = found.path()
    if compositor.kind == "mutter":
        # GNOME's: every global it offers is one any client may have.
        assert path is WaylandPath.COMPOSITOR, (found.beyond_allowed, why)
        assert found.offered <= ALLOWED_GLOBALS.keys()
    elif compositor.kind == "sway":
        assert found.offered >= SWAY_PRIVILEGED
        assert path is WaylandPath.NESTED_X
        assert set(found.beyond_allowed) >= SWAY_PRIVILEGED
        assert "zwlr_data_control_manager_v1" in why or "more" in why
    else:
        # weston's own shell and screenshooter are offered to every client (weston refuses
        # them to any but its own at bind time): not a promise a sandbox is given.
        assert {"weston_desktop_shell", "weston_screenshooter"} <= set(found.beyond_allowed)
        assert path is WaylandPath.NESTED_X


def test_a_compositor_that_never_answers_is_a_clear_error_within_the_timeout(
        tmp_path: Path) -> None:
    import socket
    import time

    silent = tmp_path / "silent"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(silent))
    listener.listen(1)
    try:
        started = time.monotonic()
        with pytest.raises(SandboxError) as caught:
            probe(silent, timeout=0.5)
        assert time.monotonic() - started < 2.0
        assert "no answer within 0.5 s" in caught.value.message
        with pytest.raises(SandboxError) as missing:
            probe(tmp_path / "absent")
        assert str(tmp_path / "absent") in missing.value.message
    finally:
        listener.close()


def test_doctor_says_which_way_wayland_profiles_reach_each_compositor(
        compositor: Compositor) -> None:
    import subprocess
    import sys

    from tests.integration.conftest import REPO

    result = subprocess.run([sys.executable, "-m", "sandboxapp", "doctor"],
                            env={**compositor.client_env(), "HOME": "/root"}, cwd=REPO,
                            capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["Wayland"]]
    assert len(lines) == 1 and lines[0].startswith("ok "), result.stdout
    if compositor.kind == "mutter":
        assert f"draw on the compositor itself ({compositor.socket})" in lines[0]
    else:
        assert "show their windows through X" in lines[0]
        assert ("zwlr_data_control_manager_v1" if compositor.kind == "sway"
                else "weston_desktop_shell") in lines[0]


def test_a_compositor_that_floods_the_question_is_cut_off(tmp_path: Path) -> None:
    import socket
    import struct
    import threading
    import time

    def announce(name: int, interface: str) -> bytes:
        text = interface.encode() + b"\0"
        body = (struct.pack("=II", name, len(text)) + text + b"\0" * (-len(text) % 4)
                + struct.pack("=I", 1))
        return struct.pack("=II", 2, (8 + len(body)) << 16) + body

    flooding = tmp_path / "flooding"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(flooding))
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        connection.recv(4096)
        burst = b"".join(announce(number, "wl_compositor") for number in range(1, 2000))
        try:
            while True:
                connection.sendall(burst)
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(SandboxError) as caught:
            probe(flooding, timeout=3.0)
        assert time.monotonic() - started < 4.0
        assert "more than" in caught.value.message or "no answer" in caught.value.message
    finally:
        listener.close()


def test_a_stale_wayland_display_falls_back_to_x_and_doctor_warns(tmp_path: Path) -> None:
    import subprocess
    import sys

    from sandboxapp.host.wayland import choose_path
    from tests.integration.conftest import REPO

    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path),
           "WAYLAND_DISPLAY": "wayland-gone", "HOME": "/root"}
    choice = choose_path(env)
    assert choice is not None and choice.unanswered and not choice.native
    assert str(tmp_path / "wayland-gone") in choice.why
    result = subprocess.run([sys.executable, "-m", "sandboxapp", "doctor"], env=env, cwd=REPO,
                            capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["Wayland"]]
    assert len(lines) == 1 and lines[0].startswith("warn "), result.stdout
    assert "through X" in lines[0]


def test_under_sway_the_sandbox_shows_its_window_on_its_own_x_and_never_sees_the_compositor(
        session: Session, tmp_path: Path) -> None:
    """sway 1.7 offers every client screencopy, data-control, virtual input, input-method and
    layer-shell: a wayland = true profile gets its X server of its own there, and no Wayland
    connection at all, so none of those globals."""
    from tests.integration.launching import FULL_SANDBOX, write_variant

    (tmp_path / "sway").mkdir()
    with wayland_compositor(tmp_path / "sway", "sway") as sway:
        session.sudo_uid = sway.user.uid  # the session's user: the runtime directory is theirs
        profile = write_variant(session.profiles, [
            "/bin/sh", "-c", "env > /root/data/env; ls -A /run/sandboxapp > /root/data/run; "
            "xdpyinfo | head -1 > /root/data/x; xlogo & sleep 1; xwininfo -root -children "
            "> /root/data/windows; kill $!"], FULL_SANDBOX + "wayland = true\n")
        env = {**session.env(), "XDG_RUNTIME_DIR": str(sway.user.runtime),
               "WAYLAND_DISPLAY": sway.socket.name}
        dry = session.sandboxapp("run", "--dry-run", str(profile), env=env)
        assert "Wayland:  not used: the compositor offers every client" in dry.stdout
        result = session.sandboxapp("run", str(profile), env=env)
        assert result.returncode == 0, result.stderr
        assert not [name for name in clients_of(sway.socket).values()]
    data = session.persist_dir()
    inside = dict(line.split("=", 1) for line in (data / "env").read_text().splitlines()
                  if "=" in line)
    assert "WAYLAND_DISPLAY" not in inside and "wayland-0" not in (data / "run").read_text()
    # Its window, on the X server of its own (never the user's display).
    shown = (data / "x").read_text()
    assert shown.startswith("name of display:") and session.xserver is not None
    assert shown.strip() != f"name of display:    {session.xserver.display}"
    assert '"xlogo"' in (data / "windows").read_text()


def test_under_mutter_a_wayland_profile_is_shown_natively_without_any_x_display(
        session: Session, tmp_path: Path) -> None:
    """GNOME's compositor, and no DISPLAY at all (a Wayland session without Xwayland): a
    profile with x11 = true and wayland = true is shown natively, not refused for the X
    display it does not use."""
    from tests.harness import LIST_GLOBALS
    from tests.integration.launching import FULL_SANDBOX, write_variant

    (tmp_path / "mutter").mkdir()
    with wayland_compositor(tmp_path / "mutter", "mutter") as mutter:
        session.sudo_uid = mutter.user.uid
        data = session.persist_dir()
        data.mkdir(parents=True, exist_ok=True)
        (data / "globals.py").write_text(LIST_GLOBALS)
        for made in [data, *data.relative_to(session.data_home).parents][:-1]:
            os.chown(session.data_home / made, mutter.user.uid, mutter.user.uid)
        profile = write_variant(session.profiles, [
            "/bin/sh", "-c", "python3 /root/data/globals.py > /root/data/globals; "
            "env > /root/data/env"], FULL_SANDBOX + "wayland = true\n")
        env = {key: value for key, value in session.env().items()
               if key not in ("DISPLAY", "XAUTHORITY")}
        env.update(XDG_RUNTIME_DIR=str(mutter.user.runtime), WAYLAND_DISPLAY=mutter.socket.name)
        result = session.sandboxapp("run", str(profile), env=env)
        assert result.returncode == 0, result.stderr
    assert {"wl_compositor", "xdg_wm_base"} <= set((data / "globals").read_text().split())
    inside = dict(line.split("=", 1) for line in (data / "env").read_text().splitlines()
                  if "=" in line)
    assert inside["WAYLAND_DISPLAY"] == "/run/sandboxapp/wayland-0" and "DISPLAY" not in inside
