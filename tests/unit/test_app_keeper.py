"""The container's PID 2 (plan.py: APP_KEEPER), run by the host's own /bin/sh."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from sandboxapp.features.spec import APP_KEEPER, GATE


def keep(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = APP_KEEPER.replace(GATE, str(gate))
    opener = threading.Thread(target=gate.write_text, args=("go\n",))
    opener.start()
    try:
        # A session of its own, as the payload under nspawn's stub init has.
        return subprocess.run(["/bin/sh", "-c", script, "sh", *command], capture_output=True,
                              text=True, timeout=30, start_new_session=True, check=False)
    finally:
        opener.join()


def test_the_apps_exit_status_and_output_pass_through(tmp_path: Path) -> None:
    result = keep(tmp_path, "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")


def test_a_missing_or_unexecutable_command_gives_127_or_126(tmp_path: Path) -> None:
    assert keep(tmp_path, "/nonexistent").returncode == 127
    (tmp_path / "sub").mkdir()
    data = tmp_path / "data"
    data.write_text("not a program\n")
    data.chmod(0o644)
    assert keep(tmp_path / "sub", str(data)).returncode == 126


def test_it_stays_while_a_restarted_instance_runs(tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    started = time.monotonic()
    result = keep(tmp_path, "/bin/sh", "-c",
                  f"(sleep 1; echo new > {marker}) & exit 0")
    assert result.returncode == 0
    assert marker.read_text() == "new\n"  # it was there when PID 2 ended, not after
    assert time.monotonic() - started >= 1


def test_a_process_in_a_session_of_its_own_does_not_hold_it(tmp_path: Path) -> None:
    started = time.monotonic()
    result = keep(tmp_path, "/bin/sh", "-c", "setsid sleep 5 >/dev/null 2>&1 & exit 3")
    assert result.returncode == 3
    assert time.monotonic() - started < 4


def test_the_app_gets_default_signal_dispositions_and_no_shell_message(tmp_path: Path) -> None:
    result = keep(tmp_path, "/bin/sh", "-c", "kill -TERM $$; echo survived")
    assert result.returncode == 128 + signal.SIGTERM
    assert result.stdout == "" and result.stderr == ""
