"""Facts about the host that change how systemd-nspawn must be called, read at run time."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.command import output_of


@dataclass(frozen=True)
class HostFacts:
    # With systemd as PID 1 nspawn can register the container with machined (machinectl list);
    # without it, registering fails and nspawn must not try to create a scope unit either.
    systemd_running: bool


def nspawn_version() -> int:
    first = output_of(["systemd-nspawn", "--version"]).splitlines()[0]
    match = re.match(r"systemd (\d+)", first)
    return int(match.group(1)) if match else 0


@functools.cache
def host_facts() -> HostFacts:
    return HostFacts(systemd_running=Path("/run/systemd/system").is_dir())
