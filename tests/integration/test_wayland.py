"""The Wayland door: what the user's compositor offers a sandbox, asked of real compositors run
headless as a plain user (GNOME's mutter, sway 1.7, weston), and the way a sandbox may reach
each."""

from __future__ import annotations

import os
import time
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


def listing_profile(session: Session, compositor: Compositor) -> tuple[Path, dict[str, str]]:
    """A wayland = true profile of the test image that lists what the compositor offers it
    (data/globals, as wayland-info lists globals) and its environment (data/env), launched
    for the compositor's user; (the profile, the session's environment in that compositor)."""
    from tests.harness import LIST_GLOBALS
    from tests.integration.launching import FULL_SANDBOX, write_variant

    session.sudo_uid = compositor.user.uid
    data = session.persist_dir()
    data.mkdir(parents=True, exist_ok=True)
    (data / "globals.py").write_text(LIST_GLOBALS)
    for made in [data, *data.relative_to(session.data_home).parents][:-1]:
        os.chown(session.data_home / made, compositor.user.uid, compositor.user.uid)
    profile = write_variant(session.profiles, [
        "/bin/sh", "-c", "python3 /root/data/globals.py > /root/data/globals; "
        "env > /root/data/env"], FULL_SANDBOX + "wayland = true\n")
    return profile, {**session.env(), "XDG_RUNTIME_DIR": str(compositor.user.runtime),
                     "WAYLAND_DISPLAY": compositor.socket.name}


def listed(session: Session) -> tuple[set[str], dict[str, str]]:
    """What listing_profile's launch saw: the globals offered it, and its environment."""
    data = session.persist_dir()
    inside = dict(line.split("=", 1) for line in (data / "env").read_text().splitlines()
                  if "=" in line)
    return set((data / "globals").read_text().split()), inside


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
    (tmp_path / "mutter").mkdir()
    with wayland_compositor(tmp_path / "mutter", "mutter") as mutter:
        profile, env = listing_profile(session, mutter)
        env.pop("DISPLAY", None), env.pop("XAUTHORITY", None)
        result = session.sandboxapp("run", str(profile), env=env)
        assert result.returncode == 0, result.stderr
    offered, inside = listed(session)
    assert {"wl_compositor", "xdg_wm_base"} <= offered
    assert inside["WAYLAND_DISPLAY"] == "/run/sandboxapp/wayland-0" and "DISPLAY" not in inside


@pytest.mark.parametrize("kind", ["sway-trixie", "labwc-trixie"])
def test_a_socket_registered_as_a_sandboxs_hides_the_extras_until_its_descriptor_closes(
        tmp_path: Path, kind: str) -> None:
    """sway 1.10 and labwc 0.8 offer every client what sway 1.7 does (screencopy,
    data-control, virtual input, input-method, layer-shell), and
    wp_security_context_manager_v1: a socket registered through it offers its clients none of
    those, and takes no client once the launcher's descriptor closes. labwc offers them only
    what any client may have, which makes it a sandbox's path; sway 1.10 still offers them the
    idle notifier (when the user types, to the millisecond), which keeps a sandbox on X."""
    import socket

    from sandboxapp.host.wayland import SECURITY_CONTEXT, choose_path, register_sandbox_socket

    with wayland_compositor(tmp_path, kind) as compositor:
        offered = probe(compositor.socket)
        assert SECURITY_CONTEXT in offered.offered and offered.offered >= SWAY_PRIVILEGED
        path = tmp_path / "sandbox-socket"
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            listener.listen(4)
            close = register_sandbox_socket(compositor.socket, listener, "app", "sandboxapp-app")
        try:
            sandboxed = probe(path)
            assert {"wl_compositor", "xdg_wm_base", "wl_seat"} <= sandboxed.offered
            assert not sandboxed.offered & SWAY_PRIVILEGED, sandboxed.offered
            assert SECURITY_CONTEXT not in sandboxed.offered  # no nesting
        finally:
            os.close(close)
        # It stops listening there (it polls the pipe's hang-up): no new client gets in.
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as late:
                    late.connect(str(path))
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the registered socket still takes clients"
            time.sleep(0.1)
        choice = choose_path(compositor.client_env())
        assert choice is not None
        if kind == "labwc-trixie":
            assert sandboxed.offered <= ALLOWED_GLOBALS.keys()
            assert choice.path is WaylandPath.SECURITY_CONTEXT and choice.native, choice
        else:
            assert sandboxed.beyond_allowed == ["ext_idle_notifier_v1"]
            assert choice.path is WaylandPath.NESTED_X and not choice.unanswered, choice
            assert "ext_idle_notifier_v1" in choice.why


def test_under_labwc_the_sandbox_gets_a_socket_of_its_own_and_none_of_the_extras(
        session: Session, tmp_path: Path) -> None:
    """A wayland = true profile under labwc 0.8: its Wayland socket is one the launcher
    registered as the sandbox's; inside, none of screencopy, data-control, virtual input,
    input-method or layer-shell is offered (listed as wayland-info lists globals), only what
    any client may have; there is no X display, and the socket is gone with the launch."""
    from tests.integration.launching import NAME

    (tmp_path / "labwc").mkdir()
    with wayland_compositor(tmp_path / "labwc", "labwc-trixie") as labwc:
        profile, env = listing_profile(session, labwc)
        dry = session.sandboxapp("run", "--dry-run", str(profile), env=env)
        assert "wp_security_context_manager_v1" in dry.stdout, dry.stdout
        result = session.sandboxapp("run", str(profile), env=env)
        assert result.returncode == 0, result.stderr
        registered = labwc.user.runtime / "sandboxapp" / ".wayland" / NAME
        assert not registered.exists()
    offered, inside = listed(session)
    assert {"wl_compositor", "xdg_wm_base", "wl_seat"} <= offered, offered
    assert not offered & SWAY_PRIVILEGED, offered
    assert offered <= ALLOWED_GLOBALS.keys(), offered - ALLOWED_GLOBALS.keys()
    assert inside["WAYLAND_DISPLAY"] == "/run/sandboxapp/wayland-0" and "DISPLAY" not in inside


SWAPPER = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
/* In the directory argv[1], swap the directory argv[2] with a symlink to argv[3], forever. */
int main(int argc, char **argv) {
    char alt[256];
    if (argc != 4 || chdir(argv[1]) != 0) return 1;
    snprintf(alt, sizeof alt, "%s.alt", argv[2]);
    for (;;) {
        struct stat st;
        if (lstat(argv[2], &st) != 0) mkdir(argv[2], 0700);
        if (lstat(alt, &st) != 0) symlink(argv[3], alt);
        renameat2(AT_FDCWD, argv[2], AT_FDCWD, alt, RENAME_EXCHANGE);
    }
}
"""


def test_a_launch_as_root_makes_its_registered_socket_nowhere_but_in_the_users_directory(
        session: Session, tmp_path: Path) -> None:
    """Root launching for a user (sudo -E) makes the sandbox's Wayland socket in a directory of
    the user's: a program of the user's that swaps that directory with a symlink to a
    directory of root's, as fast as it can, never has root make (or hand the user) a socket
    there; a launch that loses the race says why in a line."""
    import shutil
    import subprocess

    from tests.harness import require_programs
    from tests.integration.launching import NAME

    require_programs("gcc")
    (tmp_path / "swapper.c").write_text(SWAPPER)
    subprocess.run(["gcc", "-O2", "-o", str(tmp_path / "swapper"), str(tmp_path / "swapper.c")],
                   check=True, capture_output=True)
    roots = tmp_path / "roots"
    roots.mkdir(mode=0o755)
    (tmp_path / "labwc").mkdir()
    with wayland_compositor(tmp_path / "labwc", "labwc-trixie") as labwc:
        profile, env = listing_profile(session, labwc)
        user = labwc.user
        wayland = user.runtime / "sandboxapp" / ".wayland"
        wayland.mkdir(parents=True, mode=0o700)
        for made in (wayland.parent, wayland):
            os.chown(made, user.uid, user.gid)
        swapper = subprocess.Popen(
            ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
             str(tmp_path / "swapper"), str(wayland), NAME, str(roots)])
        try:
            for _ in range(20):
                result = session.sandboxapp("run", str(profile), env=env)
                assert "Traceback" not in result.stderr, result.stderr
                assert result.returncode in (0, 125), result.stderr
        finally:
            swapper.kill()
            swapper.wait()
    assert not list(roots.iterdir()), list(roots.iterdir())
    shutil.rmtree(wayland, ignore_errors=True)
