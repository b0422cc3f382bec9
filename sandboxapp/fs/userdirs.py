"""The user's XDG user directories, as xdg-user-dirs writes them in user-dirs.dirs: which
directory their downloads go to."""

from __future__ import annotations

import re
from pathlib import Path

from sandboxapp.errors import SandboxError
from sandboxapp.fs.safepath import DesktopUser, read_user_file

# XDG_DOWNLOAD_DIR="$HOME/Downloads": a path relative to the home directory, or an absolute
# one; a backslash quotes the character after it. Nothing else is expanded.
_LINE = re.compile(r'\s*XDG_DOWNLOAD_DIR\s*=\s*"((?:[^"\\]|\\.)*)"\s*')
MAX_USER_DIRS = 1 << 16


def download_dir(config_home: Path, home: Path, user: DesktopUser) -> Path:
    """The user's download directory: user-dirs.dirs's DOWNLOAD, else ~/Downloads. A value
    that is the home directory itself (xdg-user-dirs' way to say "none") is the home."""
    path = config_home / "user-dirs.dirs"
    try:
        if user.acted_for() is None:
            data = path.read_bytes()[:MAX_USER_DIRS]
        else:
            # Root reads it for the user without following their symlinks.
            data = read_user_file(path, user, trusted=False, limit=MAX_USER_DIRS)
    except (OSError, SandboxError):
        return home / "Downloads"
    found = None
    for line in data.decode("utf-8", "replace").splitlines():
        match = _LINE.fullmatch(line)
        if match:
            found = re.sub(r"\\(.)", r"\1", match.group(1))
    if found is None:
        return home / "Downloads"
    if found == "$HOME" or found.startswith("$HOME/"):
        return home / found[len("$HOME/"):] if found != "$HOME" else home
    if found.startswith("/") and "\0" not in found:
        return Path(found)
    return home / "Downloads"
