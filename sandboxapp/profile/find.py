"""Finding profiles: the lookup through the user's, the system's and the shipped profile
directories, and reading one file."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import SandboxError
from sandboxapp.paths import Locations
from sandboxapp.profile.model import (
    MAX_FILE_SIZE,
    Profile,
    check_profile_name,
    invalid,
)
from sandboxapp.profile.parse import parse_profile


def load_profile_file(path: Path, origin: str = "file") -> Profile:
    name = path.name.removesuffix(".toml")
    try:
        check_profile_name(name)
    except SandboxError as exc:
        raise invalid(f"{path}: {exc.message}") from None
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise invalid(f"{path}: cannot read the profile: {exc.strerror}") from None
    return profile_from_bytes(name, path, origin, raw)


def profile_from_bytes(name: str, path: Path, origin: str, raw: bytes) -> Profile:
    """The profile a file's first bytes hold (read up to MAX_FILE_SIZE + 1, so a larger file
    is told)."""
    if len(raw) > MAX_FILE_SIZE:
        raise invalid(f"{path}: the file is larger than {MAX_FILE_SIZE} bytes; allowed: a profile")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid(f"{path}: not UTF-8 text; allowed: a TOML file in UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise invalid(f"{path}: TOML syntax error: {exc}") from None
    return parse_profile(name, path, origin, doc)


@dataclass(frozen=True)
class ProfileEntry:
    """A profile file found by the lookup, not yet loaded."""

    name: str
    path: Path
    origin: str
    shadowed_by: Path | None = None


def iter_profile_files(locations: Locations) -> Iterator[ProfileEntry]:
    """Every profile file in lookup order; later files of the same name are marked shadowed."""
    first: dict[str, Path] = {}
    for origin, directory in locations.profile_dirs():
        try:
            candidates = sorted(directory.glob("*.toml"))
        except OSError:
            continue
        for path in candidates:
            name = path.name.removesuffix(".toml")
            if not path.is_file():
                continue
            yield ProfileEntry(name, path, origin, first.get(name))
            first.setdefault(name, path)


def find_profile(name: str, locations: Locations) -> Profile:
    check_profile_name(name)
    for origin, directory in locations.profile_dirs():
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return load_profile_file(candidate, origin)
    searched = ", ".join(str(d) for _, d in locations.profile_dirs())
    raise invalid(
        f"no profile named {name!r}; looked in {searched}",
        hint="'sandboxapp list' shows the profiles there are",
    )

