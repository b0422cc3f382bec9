"""The order of a launch: the container starts, its app held at the gate, while the grants are
made; a launch stopped or killed anywhere in that leaves nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.launching import (
    FULL_SANDBOX,
    Session,
    image_uid,
    wait_for_file,
    wait_for_no_sandbox_processes,
    waiting_command,
    write_variant,
)


def test_repeated_launches_do_the_same(session: Session) -> None:
    """Every launch is worked out afresh and goes one way: the second of two identical ones
    sees what the first left in its persistent directory, and nothing else differs."""
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, [
        "/bin/sh", "-c", "xdpyinfo | grep 'name of display'; pactl info | grep 'Server String';"
                         " ls /root/data; echo GREETING=$GREETING"],
        FULL_SANDBOX + 'env = { GREETING = "hello" }\n')
    first = session.run(str(profile))
    assert first.returncode == 0, first.stderr
    (session.persist_dir() / "kept").write_text("kept\n")
    second = session.run(str(profile))
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout.replace("GREETING", "kept\nGREETING", 1)
    assert "Server String: unix:/run/sandboxapp/pulse/native" in second.stdout
    assert "GREETING=hello" in second.stdout
    assert not (session.run_dir / "tickets").exists()
    session.assert_nothing_left(grants_before, modules_before)


def test_a_changed_profile_is_launched_as_it_now_says(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo GREETING=$GREETING"],
                            FULL_SANDBOX + 'env = { GREETING = "one" }\n')
    assert session.run(str(profile)).returncode == 0
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo GREETING=$GREETING"],
                            FULL_SANDBOX + 'env = { GREETING = "two" }\n')
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "GREETING=two\n"


def test_a_removed_persistent_directory_is_made_again(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "ls -a /root/data"],
                            FULL_SANDBOX)
    assert session.run(str(profile)).returncode == 0
    session.persist_dir().rmdir()
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert session.persist_dir().is_dir()
    assert "cleaned up" not in again.stderr
    session.assert_nothing_left(grants_before, modules_before)


def test_a_killed_launch_is_cleaned_up(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    with session.running(profile):
        pass
    for mark in ("ready", "go"):
        (session.persist_dir() / mark).unlink()

    launch = session.start(str(profile))
    try:
        wait_for_file(session.persist_dir() / "ready", launch)
        # Its record: the X, sound and session manager directories, made first, then the
        # layer and the container; the nested X server, in the first, with its display and
        # process.
        record = json.loads((session.run_dir / "sandboxapp-test.json").read_text())
        kinds = [entry["kind"] for entry in record["entries"]]
        assert kinds == ["x11-nested", "sound", "session-manager", "layer", "container"]
        quit_dir = Path(record["entries"][2]["dir"])
        assert (quit_dir / "socket").is_socket()
        nested = record["entries"][0]
        assert nested["display"] is not None and nested["server"] is not None
        server = psutil.Process(nested["server"][0])
        assert server.name() == "Xephyr"
    finally:
        launch.kill()
        launch.wait()
    assert wait_for_no_sandbox_processes(image_uid(session), timeout=5) == []
    # The nested server went with its launcher (its parent-death signal).
    server.wait(timeout=5)
    result = session.sandboxapp("cleanup")
    assert result.returncode == 0, result.stderr
    assert "cleaned up after sandboxapp-test" in result.stdout
    session.assert_nothing_left(grants_before, modules_before)
    assert not Path(nested["dir"]).exists()
    assert not quit_dir.exists()


def test_the_command_install_host_writes_launches(session: Session) -> None:
    """`.venv/bin/sandboxapp`, the README's command: started with -IS, its own sys.path."""
    from tests.integration.conftest import REPO

    command = REPO / ".venv" / "bin" / "sandboxapp"
    assert command.read_text().startswith(f"#!{REPO}/.venv/bin/python -IS\n")
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo ran"], FULL_SANDBOX)
    for _ in range(2):
        result = subprocess.run([str(command), "run", str(profile)], env=session.env(),
                                cwd=REPO, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "ran\n"


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.3])
def test_a_launch_stopped_while_it_starts_leaves_nothing(session: Session,
                                                         delay: float) -> None:
    """SIGTERM at any moment, from the launch record's writing until the app runs (the
    container starting while the grants are made): the launch stops (128 + 15) and takes back
    what it made, with no cleanup left to do."""
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "sleep 30"], FULL_SANDBOX)
    launch = session.start(str(profile))
    deadline = time.monotonic() + 10
    while not (session.run_dir / "sandboxapp-test.json").exists():
        assert time.monotonic() < deadline and launch.poll() is None
        time.sleep(0.001)
    time.sleep(delay)
    launch.send_signal(signal.SIGTERM)
    try:
        assert launch.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    session.assert_nothing_left(grants_before, modules_before)
