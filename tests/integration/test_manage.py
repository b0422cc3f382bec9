"""Menu entries, ps, stop, join, doctor and what a menu user sees, on the real test image."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxapp.fs.util import mounts_under
from tests.harness import XServer, require_programs
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    Session,
    image_uid,
    looping_command,
    wait_for_file,
    waiting_command,
    write_variant,
)


def validate(path: Path) -> None:
    result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout.lower(), result.stdout


def entry_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("["):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_menu_entry_from_the_test_image_validates_and_starts_the_sandbox(
    session: Session,
) -> None:
    require_programs("desktop-file-validate", "dex")
    write_variant(session.profiles, ["/bin/sh", "-c", "echo started > /root/data/started"],
                  FULL_SANDBOX)
    result = session.sandboxapp("desktop", "install", NAME)
    assert result.returncode == 0, result.stderr
    entry = session.data_home / "applications" / f"sandboxapp-{NAME}.desktop"
    validate(entry)
    values = entry_values(entry)
    assert values["Name"] == f"{NAME} (sandboxed)"
    assert "TryExec" not in values
    assert values["DBusActivatable"] == "false"
    assert values["Exec"].endswith(f"run {NAME}")
    listing = session.sandboxapp("desktop", "list")
    assert f"{NAME}  {entry}" in listing.stdout

    # Started the way a menu starts it: by a desktop-entry launcher reading the Exec line.
    launched = subprocess.run(["dex", str(entry)], env=session.env(), capture_output=True,
                              text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr
    wait_for_file(session.persist_dir() / "started")

    removed = session.sandboxapp("desktop", "remove", NAME)
    assert removed.returncode == 0, removed.stderr
    assert not entry.exists()
    again = session.sandboxapp("desktop", "remove", NAME)
    assert again.returncode == 2
    assert "no menu entry" in again.stderr


@pytest.mark.slow
def test_menu_entry_for_firefox_from_its_real_image(session: Session,
                                                    firefox_image_dir: Path) -> None:
    require_programs("desktop-file-validate")
    firefox = Session(session.tmp, firefox_image_dir, session.xserver, session.sound)
    result = firefox.sandboxapp("desktop", "install", "firefox")
    assert result.returncode == 0, result.stderr
    assert "from the image's firefox-esr.desktop" in result.stdout
    entry = firefox.data_home / "applications" / "sandboxapp-firefox.desktop"
    validate(entry)
    values = entry_values(entry)
    assert values["Name"] == "Firefox ESR (sandboxed)"
    # Its windows are in its nested display's window, whose class is the profile's.
    assert values["StartupWMClass"] == "sandboxapp-firefox"
    assert "x-scheme-handler/https" in values["MimeType"]
    assert values["Exec"].endswith("run firefox -- %u")
    assert values["Icon"] == "sandboxapp-firefox"
    icons = list((firefox.data_home / "icons" / "hicolor").glob("*/apps/sandboxapp-firefox.png"))
    assert len(icons) >= 3
    assert icons[0].read_bytes().startswith(b"\x89PNG")
    # The system's own entries are neither shadowed nor edited.
    assert not list(firefox.data_home.glob("applications/firefox*.desktop"))
    removed = firefox.sandboxapp("desktop", "remove", "firefox")
    assert removed.returncode == 0
    assert not list((firefox.data_home / "icons").glob("**/sandboxapp-firefox.*"))


def test_stop_lets_the_app_save_and_revokes(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(
        session.profiles, looping_command("trap 'echo saved > /root/data/saved; exit 0' TERM"),
        FULL_SANDBOX)
    launch = session.start_ready(profile)
    stopped = session.sandboxapp("stop", NAME)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped {NAME}" in stopped.stdout
    assert launch.wait(timeout=30) == 143
    assert (session.persist_dir() / "saved").read_text() == "saved\n"
    session.assert_nothing_left(grants_before, modules_before)


def test_stop_kills_an_app_that_ignores_sigterm_after_the_timeout(session: Session) -> None:
    profile = write_variant(session.profiles, looping_command("trap '' TERM HUP"), FULL_SANDBOX)
    launch = session.start_ready(profile)
    started = time.monotonic()
    stopped = session.sandboxapp("stop", "--timeout", "2", NAME)
    assert stopped.returncode == 0, stopped.stderr
    assert launch.wait(timeout=30) == 143
    assert time.monotonic() - started < 15
    assert mounts_under(session.image_dir) == []


# An app that needs 11 s to save when asked to stop: longer than the default 10 s grace.
SLOW_SAVE = "trap 'sleep 11; echo saved > /root/data/saved; exit 0' TERM"


def test_stop_gives_the_app_the_timeout_asked_for_beyond_the_default(session: Session) -> None:
    profile = write_variant(session.profiles, looping_command(SLOW_SAVE), FULL_SANDBOX)
    launch = session.start_ready(profile)
    stopped = session.sandboxapp("stop", "--timeout", "20", NAME)
    assert stopped.returncode == 0, stopped.stderr
    assert launch.wait(timeout=30) == 143
    assert (session.persist_dir() / "saved").read_text() == "saved\n"
    took = float(stopped.stdout.split()[-2])
    assert 11 <= took < 20, stopped.stdout
    assert not list(session.run_dir.glob("*.stop"))
    out_of_range = session.sandboxapp("stop", "--timeout", "0", NAME)
    assert out_of_range.returncode == 2
    assert "--timeout 0 is out of range" in out_of_range.stderr


def test_ps_shows_the_running_sandbox(session: Session) -> None:
    profile = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    with session.running(profile) as launch:
        result = session.sandboxapp("ps", "--json")
        assert result.returncode == 0, result.stderr
        [sandbox] = json.loads(result.stdout)
        assert sandbox["profile"] == NAME
        assert sandbox["launcher_pid"] == launch.pid
        assert sandbox["host_uid"] == image_uid(session)
        assert isinstance(sandbox["container_pid"], int)
        assert sandbox["memory_bytes"] > 0
        grants = " ".join(sandbox["grants"])
        assert "x11 :" in grants and "a display of its own" in grants and "sound" in grants
        table = session.sandboxapp("ps")
        assert table.stdout.splitlines()[0].split()[:3] == ["PROFILE", "LAUNCHER", "CONTAINER"]
        assert table.stdout.splitlines()[1].startswith(NAME)
    assert "no sandboxes are running" in session.sandboxapp("ps").stdout


def test_a_second_run_joins_the_running_sandbox(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    first = write_variant(session.profiles,
                          waiting_command("readlink /proc/self/ns/pid > /root/data/first-ns"),
                          FULL_SANDBOX)
    with session.running(first) as launch:
        second = write_variant(
            session.profiles,
            ["/bin/sh", "-c", "readlink /proc/self/ns/pid; xdpyinfo >/dev/null && echo x-ok; "
                              "cat /root/data/first-ns; exit 5"],
            FULL_SANDBOX,
        )
        joined = session.run(str(second))
        assert joined.returncode == 5, joined.stderr
        ns_joined, x_ok, ns_first = joined.stdout.split()
        assert ns_joined == ns_first and ns_joined.startswith("pid:[")
        assert x_ok == "x-ok"
        # The joined command reached the sandbox's own display (the running launch's nested
        # one): no host-list entry, and no grant of its own.
        assert session.x_grants() == grants_before
        assert launch.poll() is None
    # The first launch cleaned up, once.
    assert session.x_grants() == grants_before
    assert session.socket_modules() == modules_before
    assert mounts_under(session.image_dir) == []
    assert not list(session.run_dir.glob("*.json"))


def test_doctor_passes_here_and_names_each_missing_piece(session: Session) -> None:
    ok = session.sandboxapp("doctor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert all(line.startswith(("ok", "warn")) for line in lines), ok.stdout
    assert any("systemd-nspawn" in line and "rootidmap" in line for line in lines)
    assert any(line.startswith("ok") and "X isolation" in line and "of their own" in line
               for line in lines), ok.stdout

    no_display = session.env()
    del no_display["DISPLAY"]
    result = session.sandboxapp("doctor", env=no_display)
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "DISPLAY is not set" in line
               for line in result.stdout.splitlines())

    no_sound = session.env()
    no_sound["PULSE_SERVER"] = f"unix:{session.tmp}/nothing/native"
    result = session.sandboxapp("doctor", env=no_sound)
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "sound server" in line
               for line in result.stdout.splitlines())

    assert session.xserver is not None
    subprocess.run(["xhost", "+local:"], env=session.xserver.client_env(), check=True,
                   capture_output=True)
    result = session.sandboxapp("doctor")
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "admits every local program without a cookie"
               in line and "LOCAL:" in line for line in result.stdout.splitlines())


@pytest.fixture
def notification_daemon(tmp_path: Path, xserver: XServer) -> Iterator[dict[str, str]]:
    """A session bus and dunst, a real notification daemon, on the test display."""
    require_programs("dbus-daemon", "dunst", "dunstctl", "notify-send")
    address = f"unix:path={tmp_path}/bus"
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", f"--address={address}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**xserver.client_env(), "DBUS_SESSION_BUS_ADDRESS": address, "HOME": str(tmp_path)}
    deadline = time.monotonic() + 10
    while not (tmp_path / "bus").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    dunst = subprocess.Popen(["dunst"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() < deadline:
            if subprocess.run(["dunstctl", "is-paused"], env=env, capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
        yield env
    finally:
        for process in (dunst, bus):
            process.terminate()
            process.wait(timeout=10)


def test_a_menu_user_sees_launch_errors_as_notifications_and_in_the_run_log(
    session: Session, notification_daemon: dict[str, str],
) -> None:
    write_variant(session.profiles, ["no-such-program"], FULL_SANDBOX)
    env = {**session.env(), **{k: notification_daemon[k] for k in ("DBUS_SESSION_BUS_ADDRESS",)}}
    # No terminal: stdin, stdout and stderr are not ttys, as from a menu.
    result = session.sandboxapp("run", NAME, env=env)
    assert result.returncode == 127
    # Shown notifications go into dunst's history once closed.
    subprocess.run(["dunstctl", "close-all"], env=notification_daemon, check=True)
    history = json.loads(subprocess.run(["dunstctl", "history"], env=notification_daemon,
                                        capture_output=True, text=True, check=True).stdout)
    texts = [(n["summary"]["data"], n["body"]["data"]) for n in history["data"][0]]
    assert any(f"{NAME} did not start" in summary and "no-such-program" in body
               for summary, body in texts), texts
    logs = sorted((session.tmp / "state" / "sandboxapp" / NAME).glob("*.log"))
    assert logs
    assert "no-such-program: command not found in the image" in logs[-1].read_text()


def test_every_run_leaves_a_log(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo to-stderr >&2"],
                            FULL_SANDBOX)
    assert session.run(str(profile)).returncode == 0
    assert session.run(str(profile)).returncode == 0
    logs = sorted((session.tmp / "state" / "sandboxapp" / NAME).glob("*.log"))
    assert len(logs) == 2
    text = logs[-1].read_text()
    assert "to-stderr" in text and "# exit status 0" in text
    shutil.rmtree(session.tmp / "state")
