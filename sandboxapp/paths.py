"""Where sandboxapp keeps things, and the environment variables that move them."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IMAGE_DIR = Path("/var/lib/sandboxapp/images")
# Debian's PATH for root: the host commands sandboxapp runs, and the programs of an image.
ROOT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_RUN_DIR = Path("/run/sandboxapp")
SYSTEM_PROFILE_DIR = Path("/etc/sandboxapp/profiles")
# What `sandboxapp setup` installs for desktop users.
SANDBOXAPP_GROUP = "sandboxapp"
HELPER_PATH = "/usr/local/libexec/sandboxapp-privileged"
INSTALLED_LIB = Path("/usr/local/lib/sandboxapp")
USER_COMMAND = Path("/usr/local/bin/sandboxapp")
SUDOERS_FILE = Path("/etc/sudoers.d/sandboxapp")
# The profiles that come with sandboxapp live beside the package in the source tree.
SHIPPED_PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _env_path(name: str, default: Path) -> Path:
    """A base directory from the environment as it is now. Not pyxdg's BaseDirectory: that
    reads the environment once, when first imported, and takes relative values, which the
    XDG base directory spec says to ignore."""
    value = os.environ.get(name, "")
    return Path(value) if value.startswith("/") else default


def default_run_dir() -> Path:
    """Root's launch records live in /run/sandboxapp; a desktop user's in their runtime
    directory (the root side of their launches still keeps its own in /run/sandboxapp)."""
    if os.geteuid() == 0:
        return DEFAULT_RUN_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return Path(runtime) / "sandboxapp"
    return Path(f"/tmp/sandboxapp-{os.getuid()}")


def sudo_caller(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """The UID and GID of the user who called sudo, where root runs for them."""
    if os.geteuid() != 0:
        return None
    uid, gid = environ.get("SUDO_UID", ""), environ.get("SUDO_GID", "")
    return (int(uid), int(gid)) if uid.isdigit() and gid.isdigit() else None


def home() -> Path:
    """The home of the user a launch is for. Under sudo that is the caller's, from the user
    database: sudo sets HOME to root's, and what root makes for the caller must not land in
    root's home."""
    caller = sudo_caller(os.environ)
    if caller is not None and caller[0] != 0:
        try:
            return Path(pwd.getpwuid(caller[0]).pw_dir)
        except KeyError:
            pass  # no such user: HOME it is (nofollow refuses making theirs below /root)
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


@dataclass(frozen=True)
class Locations:
    image_dir: Path
    run_dir: Path
    config_home: Path
    data_home: Path
    state_home: Path = Path("/nonexistent")
    system_profiles: Path = SYSTEM_PROFILE_DIR
    shipped_profiles: Path = SHIPPED_PROFILE_DIR

    @classmethod
    def from_environment(cls) -> Locations:
        return cls(
            image_dir=_env_path("SANDBOXAPP_IMAGE_DIR", DEFAULT_IMAGE_DIR),
            run_dir=_env_path("SANDBOXAPP_RUN_DIR", default_run_dir()),
            config_home=_env_path("XDG_CONFIG_HOME", home() / ".config"),
            data_home=_env_path("XDG_DATA_HOME", home() / ".local" / "share"),
            state_home=_env_path("XDG_STATE_HOME", home() / ".local" / "state"),
        )

    def profile_dirs(self) -> list[tuple[str, Path]]:
        """Profile directories in lookup order, each with the name users see for it."""
        return [
            ("user", self.config_home / "sandboxapp" / "profiles"),
            ("system", self.system_profiles),
            ("shipped", self.shipped_profiles),
        ]
