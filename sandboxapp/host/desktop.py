"""Desktop menu entries for profiles: `sandboxapp-PROFILE.desktop` in the user's applications
directory, made from the program's own entry in the image where there is one (its name,
categories, MIME types, window class and icon), or from the template shipped in
desktop-entries/. Entries are read, written and validated with pyxdg (xdg.DesktopEntry); a real
desktop-file-validate checks ours too where it is installed. Only files named sandboxapp-* are
ever written or removed: the system's own entries are never shadowed or edited."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandboxapp.command import program_exists, run
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.rootfs import resolve_in_root
from sandboxapp.fs.safepath import DesktopUser, ensure_user_dir
from sandboxapp.fs.util import put_in_place
from sandboxapp.host.nested import wm_class
from sandboxapp.paths import SHIPPED_PROFILE_DIR, USER_COMMAND
from sandboxapp.profile.model import Profile, X11Access

TEMPLATE_DIR = SHIPPED_PROFILE_DIR.parent / "desktop-entries"
PREFIX = "sandboxapp-"
FIELD_CODES = ("%u", "%U", "%f", "%F")
# Keys carried over from the program's own entry (each with its translations).
COPIED_KEYS = ("Comment", "GenericName", "Categories", "MimeType", "StartupWMClass", "Keywords")
ICON_SUFFIXES = (".png", ".svg", ".xpm")
MAX_ICON_SIZE = 2 << 20
# Keys of the Desktop Entry spec newer than pyxdg's validator (1.0), which calls them invalid.
NEWER_KEYS_ERRORS = frozenset(f"Invalid key: {key}" for key in (
    "DBusActivatable", "Implements", "PrefersNonDefaultGPU", "SingleMainWindow"))
# Characters that make the Desktop Entry spec require an argument to be quoted.
RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def exec_quote(argument: str) -> str:
    """Quote one Exec argument as the Desktop Entry spec asks: reserved characters mean double
    quotes, and inside them ", `, $ and \\ take a backslash; % is written %%."""
    argument = argument.replace("%", "%%")
    if argument and not RESERVED & set(argument):
        return argument
    escaped = re.sub(r'(["`$\\])', r"\\\1", argument)
    return f'"{escaped}"'


def entry_name(profile: str) -> str:
    return f"{PREFIX}{profile}.desktop"


@dataclass(frozen=True)
class SourceEntry:
    """The program's own desktop entry: its keys, and where its icons are in the image."""

    values: dict[str, str]
    origin: str


def read_entry(path: Path) -> dict[str, str] | None:
    """The [Desktop Entry] keys of a desktop entry file (pyxdg's parser), each translation a key
    of its own; None when the file is not a desktop entry."""
    from xdg.DesktopEntry import DesktopEntry
    from xdg.Exceptions import ParsingError

    entry = DesktopEntry()
    try:
        entry.parse(str(path))
    except (ParsingError, UnicodeDecodeError, OSError):
        return None
    return dict(entry.content.get(entry.defaultGroup, {}))


def _argv0(exec_value: str) -> str:
    first = exec_value.split()[0] if exec_value.split() else ""
    return PurePosixPath(first.strip('"')).name


def find_source_entry(profile: Profile, rootfs: Path | None) -> SourceEntry:
    program = PurePosixPath(profile.command[0]).name
    if rootfs is not None:
        applications = resolve_in_root(rootfs, PurePosixPath("/usr/share/applications"))
        if applications is not None and applications.is_dir():
            candidates = sorted(applications.glob("*.desktop"),
                                key=lambda p: p.stem != program)
            for path in candidates:
                host = resolve_in_root(rootfs, PurePosixPath("/usr/share/applications") /
                                       path.name)
                if host is None or not host.is_file() or host.stat().st_size > 1 << 20:
                    continue
                values = read_entry(host)
                if values is None:
                    continue
                if path.stem == program or _argv0(values.get("Exec", "")) == program:
                    return SourceEntry(values, f"the image's {path.name}")
    template = TEMPLATE_DIR / f"{profile.name}.desktop"
    values = read_entry(template) if template.is_file() else None
    if values is not None:
        return SourceEntry(values, f"the template {template}")
    return SourceEntry({"Name": profile.name, "Comment": profile.description},
                       "the profile alone")


def _icon_files(rootfs: Path, icon: str) -> list[tuple[str, Path]]:
    """(size directory, file) for the icon in the image's hicolor theme and pixmaps."""
    if not icon or "/" in icon:
        return []
    found: list[tuple[str, Path]] = []
    hicolor = resolve_in_root(rootfs, PurePosixPath("/usr/share/icons/hicolor"))
    if hicolor is not None and hicolor.is_dir():
        for size_dir in sorted(hicolor.iterdir()):
            for suffix in ICON_SUFFIXES:
                candidate = resolve_in_root(
                    rootfs, PurePosixPath("/usr/share/icons/hicolor") / size_dir.name / "apps" /
                    f"{icon}{suffix}")
                if candidate is not None and candidate.is_file():
                    found.append((size_dir.name, candidate))
    if not found:
        for suffix in ICON_SUFFIXES:
            candidate = resolve_in_root(rootfs, PurePosixPath("/usr/share/pixmaps") /
                                        f"{icon}{suffix}")
            if candidate is not None and candidate.is_file():
                found.append(("pixmaps", candidate))
    return [(size, path) for size, path in found if path.stat().st_size <= MAX_ICON_SIZE]


def program_icons(profile: Profile, rootfs: Path) -> list[tuple[str, Path]]:
    """(size directory, file) of the program's icon in its pristine image, as its own desktop
    entry names it: what the menu entry and the sandbox's window show (never an icon from the
    running sandbox)."""
    return _icon_files(rootfs, find_source_entry(profile, rootfs).values.get("Icon", ""))


def launcher_command() -> list[str]:
    """How a menu starts sandboxapp: the installed command, else the one running now."""
    if USER_COMMAND.exists():
        return [str(USER_COMMAND)]
    argv0 = Path(sys.argv[0])
    if argv0.name == "sandboxapp" and argv0.exists():
        return [str(argv0.resolve())]
    return [sys.executable, "-m", "sandboxapp"]


@dataclass(frozen=True)
class InstalledEntry:
    path: Path
    icons: tuple[Path, ...]
    source: str


class DesktopEntries:
    def __init__(self, data_home: Path, user: DesktopUser) -> None:
        self.data_home = data_home
        self.user = user

    @property
    def applications(self) -> Path:
        return self.data_home / "applications"

    @property
    def icons(self) -> Path:
        return self.data_home / "icons"

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.user.uid, self.user.gid)

    def _write(self, path: Path, data: bytes) -> None:
        self._put_in_place(path, lambda temporary: temporary.write_bytes(data))

    def _put_in_place(self, path: Path, fill: Callable[[Path], object],
                      suffix: str = "") -> None:
        """A file of the user's, filled (and checked) by fill, put in place at once."""
        ensure_user_dir(path.parent, self.user, mode=0o755)
        owner = (self.user.uid, self.user.gid) if os.geteuid() == 0 else None
        put_in_place(path, fill, mode=0o644, owner=owner, suffix=suffix)

    def render(self, profile: Profile, rootfs: Path | None) -> tuple[
            list[tuple[str, str]], list[tuple[str, Path]], str]:
        """Our entry's keys in order, the icon files to copy, and where its keys came from."""
        source = find_source_entry(profile, rootfs)
        values = source.values
        icon_files = _icon_files(rootfs, values.get("Icon", "")) if rootfs else []
        exec_words = [*launcher_command(), "run", profile.name]
        field = next((code for code in FIELD_CODES if code in values.get("Exec", "").split()),
                     None)
        if field:
            exec_words += ["--"]
        line = " ".join(exec_quote(word) for word in exec_words)
        if field:
            line += f" {field}"
        name = values.get("Name", profile.name)
        keys = [("Type", "Application"), ("Name", f"{name} (sandboxed)")]
        keys += [(key, f"{value} (sandboxed)") for key, value in values.items()
                 if key.startswith("Name[")]
        nested = profile.sandbox.x11 is X11Access.ISOLATED
        keys += [(key, value) for key, value in values.items()
                 if key.split("[", 1)[0] in COPIED_KEYS and value
                 and not (nested and key == "StartupWMClass")]
        if nested:
            # Its windows are in the window of its own X server, whose class is the profile's.
            keys.append(("StartupWMClass", wm_class(profile.name)))
        if "Comment" not in values and profile.description:
            keys.append(("Comment", profile.description))
        keys.append(("Exec", line))
        keys.append(("Icon", f"{PREFIX}{profile.name}" if icon_files else
                     "application-x-executable"))
        keys += [("Terminal", "false"), ("DBusActivatable", "false"), ("StartupNotify", "true"),
                 ("X-Sandboxapp-Profile", profile.name)]
        return keys, icon_files, source.origin

    def _write_entry(self, path: Path, keys: list[tuple[str, str]]) -> None:
        """Written and validated by pyxdg in a temporary file beside it, then put in place."""
        from xdg.DesktopEntry import DesktopEntry
        from xdg.Exceptions import ValidationError

        def fill(temporary: Path) -> None:
            entry = DesktopEntry()
            entry.addGroup(entry.defaultGroup)
            for key, value in keys:
                entry.set(key, value)
            entry.write(str(temporary))
            with contextlib.suppress(ValidationError):
                entry.validate(report="Errors")
            errors = [e for e in entry.errors if e not in NEWER_KEYS_ERRORS]
            if errors:
                raise SandboxError(f"the menu entry {path.name} would not be valid",
                                   detail="\n".join(errors))

        self._put_in_place(path, fill, suffix=".desktop")

    def install(self, profile: Profile, rootfs: Path | None) -> InstalledEntry:
        keys, icon_files, origin = self.render(profile, rootfs)
        icons = []
        for size, source_path in icon_files:
            suffix = source_path.suffix
            target = (self.icons / "hicolor" / size / "apps" if size != "pixmaps"
                      else self.data_home / "pixmaps") / f"{PREFIX}{profile.name}{suffix}"
            self._write(target, source_path.read_bytes())
            icons.append(target)
        path = self.applications / entry_name(profile.name)
        self._write_entry(path, keys)
        validate(path)
        self._update_databases()
        return InstalledEntry(path, tuple(icons), origin)

    def remove(self, name: str) -> list[Path]:
        removed = []
        entry = self.applications / entry_name(name)
        if entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed.append(entry)
        for directory in (self.icons / "hicolor", self.data_home / "pixmaps"):
            if directory.is_dir():
                for icon in directory.glob(f"**/{PREFIX}{name}.*"):
                    if icon.is_file() and not icon.is_symlink():
                        icon.unlink()
                        removed.append(icon)
        if not removed:
            raise SandboxError(f"there is no menu entry for {name!r}",
                               hint="'sandboxapp desktop list' shows the installed entries",
                               status=ExitStatus.USAGE)
        self._update_databases()
        return removed

    def installed(self) -> list[tuple[str, Path]]:
        if not self.applications.is_dir():
            return []
        return [(path.name.removeprefix(PREFIX).removesuffix(".desktop"), path)
                for path in sorted(self.applications.glob(f"{PREFIX}*.desktop"))]

    def _update_databases(self) -> None:
        if program_exists("update-desktop-database") and self.applications.is_dir():
            run(["update-desktop-database", "--quiet", str(self.applications)], check=False)
            cache = self.applications / "mimeinfo.cache"
            if cache.exists():
                self._own(cache)
        hicolor = self.icons / "hicolor"
        if program_exists("gtk-update-icon-cache") and (hicolor / "index.theme").exists():
            run(["gtk-update-icon-cache", "--quiet", str(hicolor)], check=False)


def validate(path: Path) -> None:
    """Check an entry with desktop-file-validate where it is installed."""
    if not program_exists("desktop-file-validate"):
        return
    result = run(["desktop-file-validate", str(path)], check=False)
    if result.returncode != 0:
        raise SandboxError(f"{path} does not pass desktop-file-validate",
                           detail=result.output)

