"""What a desktop user's launcher asks the privileged helper: one JSON object, described here.

    {"action": "launch", "profile": NAME, "profile_file": PATH, "data_home": PATH,
     "program": null or PROG, "args": [ARG, ...], "downloads": null or PATH,
     "files": [NAME, ...], "grants": {KEY: PART, ...}}

The helper gets it as its one argument, or as the first message of its control channel
(system/control.py, launch/helperclient.py), and trusts none of it beyond its form: every path
is absolute and without '..', every value of the kind it must be, no key unknown. Each grant's
part is the one its feature wrote (Feature.part) and is read back, and checked against the
profile the helper reads again, by that feature itself (Feature.from_part).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxapp.errors import ExitStatus, SandboxError

MAX_REQUEST = 1 << 16  # bytes: a profile name, a few paths and a command's arguments


class Action(enum.StrEnum):
    LAUNCH = "launch"  # a new sandbox
    JOIN = "join"  # the command inside the user's running sandbox
    BUILD = "build"  # a trusted profile's image, for a user's first launch
    UPDATE = "update"  # the same, for an auto-update
    RESET = "reset"  # drop what a stateful profile kept for the user (launch/reset.py)
    HAND = "hand"  # hand the user's running sandbox the files beside the request


def refused(what: str) -> SandboxError:
    """A request that is not in its form (only a launcher gone wrong, or a person, sends one)."""
    return SandboxError(f"the request to the privileged helper is malformed: {what}",
                        status=ExitStatus.USAGE)


def absolute_path(value: object, name: str) -> Path:
    """A path of the request: absolute, without '..' or a NUL."""
    if (not isinstance(value, str) or not value.startswith("/") or ".." in Path(value).parts
            or "\0" in value):
        raise refused(f"{name} is not an absolute path without '..' or a NUL")
    return Path(value)


@dataclass(frozen=True)
class HelperRequest:
    action: Action
    profile: str
    profile_file: Path
    data_home: Path
    program: str | None = None  # `run --command PROG`
    args: tuple[str, ...] = ()
    # The profile's downloads directory on the host (sandbox.downloads), in the user's
    # download directory.
    downloads: Path | None = None
    # The names of the files handed to the sandbox at its start, in order: their descriptors
    # travel beside the request on the control channel (system/control.py).
    files: tuple[str, ...] = ()
    # Each granting feature's part, under its key (the features' registry: features/).
    grants: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"action": self.action.value, "profile": self.profile,
                           "profile_file": str(self.profile_file),
                           "data_home": str(self.data_home), "program": self.program,
                           "args": list(self.args), "grants": self.grants,
                           "downloads": None if self.downloads is None else str(self.downloads),
                           "files": list(self.files)})

    @classmethod
    def from_json(cls, text: str) -> HelperRequest:
        if len(text.encode()) > MAX_REQUEST:
            raise refused(f"it is longer than {MAX_REQUEST} bytes")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than any request
            raise refused("it is not JSON") from None
        if not isinstance(data, dict):
            raise refused("it is not a JSON object")
        unknown = set(data) - {"action", "profile", "profile_file", "data_home", "program",
                               "args", "grants", "downloads", "files"}
        if unknown:
            raise refused(f"unknown keys {', '.join(sorted(unknown))}")
        try:
            action = Action(str(data.get("action")))
        except ValueError:
            raise refused(f"no action {data.get('action')!r}; allowed: "
                          f"{', '.join(a.value for a in Action)}") from None
        profile, program = data.get("profile"), data.get("program")
        if not isinstance(profile, str):
            raise refused("profile is not a name")
        if program is not None and not isinstance(program, str):
            raise refused("program is not a string")
        args = data.get("args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise refused("args is not a list of strings")
        grants = data.get("grants", {})
        if not isinstance(grants, dict):
            raise refused("grants is not an object")
        files = data.get("files", [])
        if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
            raise refused("files is not a list of names")
        downloads = data.get("downloads")
        return cls(action, profile, absolute_path(data.get("profile_file"), "profile_file"),
                   absolute_path(data.get("data_home"), "data_home"), program, tuple(args),
                   None if downloads is None else absolute_path(downloads, "downloads"),
                   tuple(files), grants)
