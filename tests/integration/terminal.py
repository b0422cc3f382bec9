"""A terminal for a command, as a shell gives it one, and a probe that pushes input into the
terminal it holds (TIOCSTI): what a sandbox must be kept from."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import subprocess
import termios
import time

from tests.integration.conftest import REPO

# Perl is in every Debian image (perl-base); 0x5412 is TIOCSTI.
PROBE = r"""
my $n = 0;
sub push_into {
    my ($h) = @_;
    for my $c (split //, "echo PWNED\n") { $n++ if ioctl($h, 0x5412, $c) }
}
for my $fd (0, 1, 2) { push_into($_) if open($_, "+<&=", $fd) }
push_into($_) if open($_, "+<", "/dev/tty");
print "pushed $n characters\n";
"""


def _controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str, bytes]:
    """argv with a fresh terminal as its controlling terminal and standard descriptors, as a
    shell runs a command: (status, what it wrote, what is left waiting in the terminal's
    input once it has exited)."""
    master, slave = pty.openpty()
    attributes = termios.tcgetattr(slave)
    attributes[3] &= ~termios.ECHO  # pushed input is not echoed into the output: kept apart
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    process = subprocess.Popen(argv, env=env, cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
                               preexec_fn=_controlling_terminal)
    output = b""
    os.set_blocking(master, False)
    while process.poll() is None:
        time.sleep(0.05)
        with contextlib.suppress(BlockingIOError):
            output += os.read(master, 1 << 16)
    time.sleep(0.2)
    with contextlib.suppress(OSError):
        output += os.read(master, 1 << 16)
    os.set_blocking(slave, False)
    waiting = b""
    with contextlib.suppress(BlockingIOError):
        waiting = os.read(slave, 1 << 16)
    os.close(master)
    os.close(slave)
    return process.returncode, output.decode(errors="replace"), waiting
