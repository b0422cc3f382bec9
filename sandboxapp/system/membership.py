"""Whether a desktop user may launch sandboxes: the group `setup` made, the helper it
installed, and the user's membership (the doctor says it, the launcher refuses by it)."""

from __future__ import annotations

import grp
import os

from sandboxapp.paths import HELPER_PATH, SANDBOXAPP_GROUP


def membership_problem(name: str) -> tuple[str, str] | None:
    """(what is wrong, the command that fixes it) for the calling user `name`, or None."""
    fix = f"sudo sandboxapp setup --add-user {name}"
    try:
        group = grp.getgrnam(SANDBOXAPP_GROUP)
    except KeyError:
        return "sandboxapp is not set up for desktop users on this machine", fix
    if not os.access(HELPER_PATH, os.X_OK):
        return f"the privileged helper {HELPER_PATH} is not installed", fix
    if group.gr_gid not in os.getgroups() and name not in group.gr_mem:
        return f"you are not in the {SANDBOXAPP_GROUP} group", fix
    return None
