"""The terminal door: a command that joins a running sandbox from a terminal never holds it.

A process in the sandbox that has the user's terminal could push input into the user's shell
with TIOCSTI (this kernel allows it: dev.tty.legacy_tiocsti is 1) or read the user's keys. The
probe tries TIOCSTI on its standard descriptors and on /dev/tty; what it pushes would wait in
the terminal's input, where the test looks for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.integration.launching import (
    FULL_SANDBOX,
    Session,
    waiting_command,
    write_variant,
)
from tests.integration.terminal import PROBE, run_on_a_terminal


def test_a_joined_command_cannot_push_input_into_the_users_terminal(session: Session) -> None:
    first = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    with session.running(first):
        probe = write_variant(session.profiles, ["perl", "-e", PROBE], FULL_SANDBOX)
        status, output, waiting = run_on_a_terminal(
            [sys.executable, "-m", "sandboxapp", "run", str(probe)], session.env())
        assert status == 0, output
        assert "pushed 0 characters" in output, output
        assert b"PWNED" not in waiting, waiting


def test_the_probe_pushes_input_where_it_holds_the_terminal(tmp_path: Path) -> None:
    """The same probe, run on the host with the terminal: what the sandbox must be kept from
    (so the test above can fail)."""
    status, output, waiting = run_on_a_terminal(["perl", "-e", PROBE],
                                                {"PATH": os.environ["PATH"]})
    assert status == 0, output
    assert "pushed 0 characters" not in output, output
    assert b"PWNED" in waiting, waiting
