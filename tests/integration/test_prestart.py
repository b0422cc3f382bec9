"""Root's repeated launch: its container is started from the ticket the identical launch before
left, before sandboxapp has loaded (sandboxapp/prestart.py); a launch that differs in any way
goes the ordinary way, and either way leaves nothing behind."""

from __future__ import annotations

import json
import marshal
import signal
import subprocess
import time
from pathlib import Path

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

PRESTARTED = "its container was started before sandboxapp had loaded"


def last_run_log(session: Session) -> str:
    logs = sorted((session.tmp / "state" / "sandboxapp" / "sandboxapp-test").glob("*.log"))
    return logs[-1].read_text()


def tickets(session: Session) -> list[Path]:
    return sorted((session.run_dir / "tickets").iterdir())


def test_the_second_identical_launch_is_prestarted_and_does_the_same(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, [
        "/bin/sh", "-c", "xdpyinfo | grep 'name of display'; pactl info | grep 'Server String';"
                         " ls /root/data; echo GREETING=$GREETING"],
        FULL_SANDBOX + 'env = { GREETING = "hello" }\n')
    first = session.run(str(profile))
    assert first.returncode == 0, first.stderr
    assert PRESTARTED not in last_run_log(session)
    [ticket] = tickets(session)
    # The ticket holds the command root runs: root's, and nobody else may write it.
    assert ticket.stat().st_uid == 0 and not ticket.stat().st_mode & 0o022
    (session.persist_dir() / "kept").write_text("kept\n")

    second = session.run(str(profile))
    assert second.returncode == 0, second.stderr
    assert PRESTARTED in last_run_log(session)
    assert second.stdout == first.stdout.replace("GREETING", "kept\nGREETING", 1)
    assert "Server String: unix:/run/sandboxapp/pulse/native" in second.stdout
    assert "GREETING=hello" in second.stdout
    session.assert_nothing_left(grants_before, modules_before)


def test_a_changed_profile_is_launched_afresh(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo GREETING=$GREETING"],
                            FULL_SANDBOX + 'env = { GREETING = "one" }\n')
    assert session.run(str(profile)).returncode == 0
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo GREETING=$GREETING"],
                            FULL_SANDBOX + 'env = { GREETING = "two" }\n')
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "GREETING=two\n"
    assert PRESTARTED not in last_run_log(session)


def test_a_ticket_that_differs_from_the_launch_is_not_used(session: Session) -> None:
    """The launcher works every launch out afresh and compares: a container started from a
    ticket that says anything else (here, one more variable) is thrown away unstarted."""
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", "echo FROM_TICKET=${FROM_TICKET:-unset}"],
                            FULL_SANDBOX)
    assert session.run(str(profile)).returncode == 0
    [path] = tickets(session)
    ticket = marshal.loads(path.read_bytes())
    argv = ticket["argv"]
    argv.insert(argv.index("--as-pid2"), "--setenv=FROM_TICKET=yes")
    path.write_bytes(marshal.dumps(ticket))

    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "FROM_TICKET=unset\n"
    assert PRESTARTED not in last_run_log(session)
    session.assert_nothing_left(grants_before, modules_before)


def test_a_ticket_others_can_write_is_not_read(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/true"], FULL_SANDBOX)
    assert session.run(str(profile)).returncode == 0
    [path] = tickets(session)
    path.chmod(0o666)
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert PRESTARTED not in last_run_log(session)
    # The launch filed a fresh one in its place.
    [path] = tickets(session)
    assert not path.stat().st_mode & 0o022


def test_a_prestart_that_cannot_stage_a_path_undoes_itself(session: Session) -> None:
    """The persistent directory is gone: the prestart cannot bind it, takes back its layer and
    record, and the ordinary launch creates the directory."""
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "ls -a /root/data"],
                            FULL_SANDBOX)
    assert session.run(str(profile)).returncode == 0
    session.persist_dir().rmdir()
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert PRESTARTED not in last_run_log(session)
    assert session.persist_dir().is_dir()
    assert "cleaned up" not in again.stderr
    session.assert_nothing_left(grants_before, modules_before)


def test_a_killed_prestarted_launch_is_cleaned_up(session: Session) -> None:
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
        # Its record lists the sound and X directories it may create, its layer and its
        # container first: made before sandboxapp had loaded, and before the grants.
        record = json.loads((session.run_dir / "sandboxapp-test.json").read_text())
        kinds = [entry["kind"] for entry in record["entries"]]
        assert kinds == ["empty-dir", "empty-dir", "layer", "container", "x11-auth", "sound"]
    finally:
        launch.kill()
        launch.wait()
    assert wait_for_no_sandbox_processes(image_uid(session), timeout=5) == []
    result = session.sandboxapp("cleanup")
    assert result.returncode == 0, result.stderr
    assert "cleaned up after sandboxapp-test" in result.stdout
    session.assert_nothing_left(grants_before, modules_before)



def test_the_command_install_host_writes_launches_and_prestarts(session: Session) -> None:
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
    assert PRESTARTED in last_run_log(session)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.3])
def test_a_prestarted_launch_stopped_while_it_loads_leaves_nothing(session: Session,
                                                                    delay: float) -> None:
    """SIGTERM at any moment, from just after the prestart until the app runs: the launch
    stops (128 + 15) and takes back what the prestart made, with no cleanup left to do."""
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "sleep 30"], FULL_SANDBOX)
    first = session.start(str(profile))
    time.sleep(1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 128 + signal.SIGTERM
    assert tickets(session)

    launch = session.start(str(profile))
    # The prestart is done within milliseconds of the start; wait for its record.
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
