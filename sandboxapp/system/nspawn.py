"""systemd-nspawn command lines, built by pure functions from what they depend on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.system.hostfacts import HostFacts
from sandboxapp.system.uidrange import UidRange

# nspawn prints this on exit on hosts without systemd as PID 1; it is harmless.
NOISE_PREFIX = 'Attempted to remove disk file system under "/run/systemd/nspawn/propagate/'


def registration_args(facts: HostFacts) -> list[str]:
    return [] if facts.systemd_running else ["--register=no", "--keep-unit"]


def maintenance_argv(
    rootfs: Path,
    command: Sequence[str],
    facts: HostFacts,
    *,
    env: Mapping[str, str] | None = None,
    ids: UidRange | None = None,
) -> list[str]:
    """A root command in an image tree, with the host's network: during a build the tree is
    still the host root's (no user namespace); an image already shifted into its block (ids)
    is worked on in that block, so what the command creates stays in it."""
    argv = ["systemd-nspawn", "--quiet", *registration_args(facts), f"--directory={rootfs}"]
    if ids is not None:
        argv.append(f"--private-users={ids.base}:{ids.count}")
    argv += [f"--setenv={key}={value}" for key, value in (env or {}).items()]
    return [*argv, "--as-pid2", "--", *command]


def shift_ownership_argv(rootfs: Path, ids: UidRange, facts: HostFacts) -> list[str]:
    """Shift a root-owned tree into the UID block once (nspawn's recursive chown)."""
    return [
        "systemd-nspawn",
        "--quiet",
        *registration_args(facts),
        f"--directory={rootfs}",
        f"--private-users={ids.base}:{ids.count}",
        "--private-users-ownership=chown",
        "--private-network",
        "--as-pid2",
        "--",
        "/bin/true",
    ]


@dataclass(frozen=True)
class Bind:
    host: Path
    container: str
    read_only: bool = True
    # rootidmap: the container's root writes as the owner of the host directory (systemd 252+),
    # so persistent data stays owned by the desktop user on the host.
    root_idmap: bool = False

    def to_arg(self) -> str:
        option = "--bind-ro" if self.read_only else "--bind"
        suffix = ":rootidmap" if self.root_idmap else ""
        return f"{option}={_escape(str(self.host))}:{_escape(self.container)}{suffix}"


def _escape(path: str) -> str:
    # nspawn splits bind specifications at ':'; a literal one is written '\:'.
    return path.replace("\\", "\\\\").replace(":", "\\:")


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one launch needs to know to build its systemd-nspawn command line."""

    rootfs: Path
    machine: str
    ids: UidRange
    private_network: bool
    binds: tuple[Bind, ...]
    env: tuple[tuple[str, str], ...]
    command: tuple[str, ...]


def launch_argv(spec: LaunchSpec, facts: HostFacts) -> list[str]:
    argv = [
        "systemd-nspawn",
        "--quiet",
        *registration_args(facts),
        f"--directory={spec.rootfs}",
        f"--machine={spec.machine}",
        # The image was shifted into this block when it was built: no ownership option, so
        # nspawn neither chowns nor ID-maps the tree on every launch.
        f"--private-users={spec.ids.base}:{spec.ids.count}",
        "--console=autopipe",
        "--link-journal=no",
    ]
    if spec.private_network:
        argv.append("--private-network")
    argv += [bind.to_arg() for bind in spec.binds]
    argv += [f"--setenv={key}={value}" for key, value in spec.env]
    return [*argv, "--as-pid2", "--", *spec.command]
