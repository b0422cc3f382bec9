"""A profile's TOML document, strictly validated into the dataclasses of model.py.

A mistake in a profile is reported as one line naming the file, the key, what was found and
what is allowed (exit status 2), never as a traceback and never half-applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from sandboxapp.errors import SandboxError
from sandboxapp.profile.model import (
    DOWNLOADS_CONTAINER_DIR,
    ENV_NAME,
    MIRROR_URL,
    PACKAGE_NAME,
    RESERVED_CONTAINER_DIRS,
    RESERVED_ENV,
    SUITE_NAME,
    X11_ALLOWED,
    Clipboard,
    ImageSpec,
    Network,
    Profile,
    ReadOnlyBind,
    Repository,
    SandboxSpec,
    UpdatePolicy,
    X11Access,
    invalid,
)


def _found(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
             dict: "table"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} {shown}"


T = TypeVar("T")


class _Reader:
    """Walks one TOML document, turning every mistake into a one-line error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str, allowed: str) -> SandboxError:
        return invalid(f"{self.path}: {key}: {problem}; allowed: {allowed}")

    def table(self, doc: dict[str, Any], key: str, known: tuple[str, ...]) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"found {_found(value)}", f"a table [{key}]")
        self.no_unknown_keys(value, known, prefix=f"{key}.")
        return value

    def no_unknown_keys(self, table: dict[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
                raise self.fail(
                    f"{prefix}{key}", "unknown key", f"in {where}: {', '.join(known)}"
                )

    def value(
        self,
        table: dict[str, Any],
        key: str,
        label: str,
        kind: type[T],
        allowed: str,
        default: T | None = None,
    ) -> T:
        if key not in table:
            if default is None:
                raise self.fail(label, "missing", allowed)
            return default
        value = table[key]
        # bool is a subclass of int in Python; TOML keeps them apart, so do we.
        if type(value) is not kind:
            raise self.fail(label, f"found {_found(value)}", allowed)
        return value

    def string_list(
        self,
        table: dict[str, Any],
        key: str,
        label: str,
        allowed: str,
        check: Callable[[str, str], None],
        *,
        required: bool = False,
    ) -> tuple[str, ...]:
        if key not in table and not required:
            return ()
        items = self.value(table, key, label, list, allowed)
        if required and not items:
            raise self.fail(label, "found an empty array", allowed)
        for index, item in enumerate(items):
            item_label = f"{label}[{index}]"
            if not isinstance(item, str):
                raise self.fail(item_label, f"found {_found(item)}", allowed)
            check(item, item_label)
        return tuple(items)

    def container_path(self, text: str, label: str, *, side: str = "container") -> PurePosixPath:
        allowed = f"an absolute {side} path without '..', '.', ':' or control characters"
        parts = text.split("/")
        if not text.startswith("/"):
            raise self.fail(label, f"found relative path {text!r}", allowed)
        if any(part in (".", "..") for part in parts):
            raise self.fail(label, f"found {text!r}", allowed)
        if ":" in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise self.fail(label, f"found {text!r}", allowed)
        path = PurePosixPath(text)
        if path == PurePosixPath("/"):
            raise self.fail(label, "found '/'", "a directory below '/'")
        for reserved in RESERVED_CONTAINER_DIRS if side == "container" else ():
            if path == reserved or reserved in path.parents:
                raise self.fail(
                    label,
                    f"found {text!r}",
                    f"a path outside {', '.join(map(str, RESERVED_CONTAINER_DIRS))}",
                )
        return path


def _no_overlap(reader: _Reader, entries: list[tuple[str, PurePosixPath]]) -> None:
    seen: list[tuple[str, PurePosixPath]] = []
    for label, path in entries:
        for other_label, other in seen:
            if path == other:
                raise reader.fail(label, f"duplicate of {other_label} ({str(other)!r})",
                                  "each container path once")
            if other in path.parents or path in other.parents:
                raise reader.fail(
                    label,
                    f"{str(path)!r} overlaps {other_label} ({str(other)!r})",
                    "container paths that do not contain each other",
                )
        seen.append((label, path))


# -- the keys ----------------------------------------------------------------------------
#
# Each key of a profile, once: its section, its reader (the value, checked, or its default
# when the key is absent; a mistake is one line from r.fail) and its lines in the README's
# example profile. The known keys of each section, the unknown-key errors and the README's
# list all come from this table.

Reader = Callable[[_Reader, dict[str, Any], str], Any]


@dataclass(frozen=True)
class Key:
    section: str  # "" for the top level; "image", "image.repositories", "sandbox"
    name: str
    read: Reader
    readme: str  # its lines in the README's example profile


def _description(r: _Reader, table: dict[str, Any], label: str) -> str:
    text = r.value(table, "description", label, str, "a string", default="")
    if "\n" in text:
        raise r.fail(label, "found a line break", "a single line of text")
    return text


def _command(r: _Reader, table: dict[str, Any], label: str) -> tuple[str, ...]:
    def word(text: str, where: str) -> None:
        if not text or "\0" in text:
            raise r.fail(where, f"found {text!r}", "non-empty strings without NUL")

    return r.string_list(
        table, "command", label,
        'a non-empty array of strings, the program and its arguments, e.g. ["xeyes"]',
        word, required=True)


def _suite(r: _Reader, table: dict[str, Any], label: str) -> str:
    allowed = 'a Debian suite or codename, e.g. "bookworm"'
    suite = r.value(table, "suite", label, str, allowed, default="bookworm")
    if not SUITE_NAME.fullmatch(suite):
        raise r.fail(label, f"found {suite!r}", allowed)
    return suite


def _packages(r: _Reader, table: dict[str, Any], label: str) -> tuple[str, ...]:
    def package(word: str, where: str) -> None:
        if not PACKAGE_NAME.fullmatch(word):
            raise r.fail(where, f"found {word!r}",
                         "Debian package names (a-z, 0-9, '+', '-', '.'; two characters or more)")

    return r.string_list(table, "packages", label, "an array of Debian package names", package)


def _mirror(r: _Reader, table: dict[str, Any], label: str) -> str | None:
    if "mirror" not in table:
        return None
    mirror = r.value(table, "mirror", label, str, "an http, https or file URL")
    if not MIRROR_URL.fullmatch(mirror):
        raise r.fail(label, f"found {mirror!r}",
                     "an http://, https:// or file:/// URL of a Debian archive")
    return mirror


def _days(r: _Reader, table: dict[str, Any], label: str) -> int:
    allowed = "a whole number of days from 1 to 365"
    days = r.value(table, "update_after_days", label, int, allowed, default=7)
    if not 1 <= days <= 365:
        raise r.fail(label, f"found {days}", allowed)
    return days


def _flag(default: bool) -> Reader:
    def read(r: _Reader, table: dict[str, Any], label: str) -> bool:
        return r.value(table, label.rpartition(".")[2], label, bool, "true or false",
                       default=default)
    return read


REPOSITORY_URI = re.compile(r"https?://[^\s\[\]]+")
COMPONENT = re.compile(r"[a-z0-9][a-z0-9/-]*")


def _uri(r: _Reader, table: dict[str, Any], label: str) -> str:
    uri = r.value(table, "uri", label, str, "an http:// or https:// URL")
    if not REPOSITORY_URI.fullmatch(uri):
        raise r.fail(label, f"found {uri!r}", "an http:// or https:// URL")
    return uri


def _repository_suite(r: _Reader, table: dict[str, Any], label: str) -> str:
    suite = r.value(table, "suite", label, str,
                    'a suite name, or a flat repository\'s path ending in "/" (e.g. "./")')
    if not (SUITE_NAME.fullmatch(suite) or re.fullmatch(r"[a-z0-9./-]*/", suite)):
        raise r.fail(label, f"found {suite!r}", 'a suite name, or a path ending in "/" (e.g. "./")')
    return suite


def _components(r: _Reader, table: dict[str, Any], label: str) -> tuple[str, ...]:
    def component(word: str, where: str) -> None:
        if not COMPONENT.fullmatch(word):
            raise r.fail(where, f"found {word!r}", "component names such as main")

    return r.string_list(table, "components", label, "an array of component names", component)


def _signing_key(r: _Reader, table: dict[str, Any], label: str) -> PurePosixPath:
    return r.container_path(r.value(table, "key", label, str, "an absolute host path"), label,
                            side="host")


def _repositories(r: _Reader, table: dict[str, Any], label: str) -> tuple[Repository, ...]:
    allowed = 'an array of tables {uri = "http://…", suite = "…", key = "/path/to/key"}'
    repositories = []
    for index, item in enumerate(r.value(table, "repositories", label, list, allowed,
                                         default=[])):
        where = f"{label}[{index}]"
        if not isinstance(item, dict):
            raise r.fail(where, f"found {_found(item)}", allowed)
        values = _section(r, item, "image.repositories", f"{where}.")
        suite, components = values["suite"], values["components"]
        if suite.endswith("/") and components:
            raise r.fail(f"{where}.components", "components given for a flat repository",
                         "no components when the suite ends in '/'")
        repositories.append(Repository(values["uri"], suite,
                                       components or (() if suite.endswith("/") else ("main",)),
                                       values["key"]))
    return tuple(repositories)


def _x11(r: _Reader, table: dict[str, Any], label: str) -> X11Access:
    value = table.get("x11", False)
    if type(value) is not bool and value != "trusted":
        raise r.fail(label, f"found {_found(value)}", X11_ALLOWED)
    return X11Access(value)


def _clipboard(r: _Reader, table: dict[str, Any], label: str) -> Clipboard:
    allowed = ", ".join(f'"{value}"' for value in Clipboard)
    text = r.value(table, "clipboard", label, str, allowed, default=Clipboard.FOCUS.value)
    try:
        return Clipboard(text)
    except ValueError:
        raise r.fail(label, f"found {text!r}", allowed) from None


def _network(r: _Reader, table: dict[str, Any], label: str) -> Network:
    text = r.value(table, "network", label, str, '"host" or "none"', default=Network.NONE.value)
    try:
        return Network(text)
    except ValueError:
        raise r.fail(label, f"found {text!r}", '"host" or "none"') from None


def _persist(r: _Reader, table: dict[str, Any], label: str) -> tuple[PurePosixPath, ...]:
    texts = r.string_list(table, "persist", label, "an array of absolute container directories",
                          lambda text, where: None)
    return tuple(r.container_path(text, f"{label}[{i}]") for i, text in enumerate(texts))


def _env(r: _Reader, table: dict[str, Any], label: str) -> tuple[tuple[str, str], ...]:
    env_table = r.value(table, "env", label, dict, "a table of NAME = \"value\" strings",
                        default={})
    env: list[tuple[str, str]] = []
    for env_name, env_value in env_table.items():
        where = f"{label}.{env_name}"
        if not ENV_NAME.fullmatch(env_name):
            raise r.fail(where, f"found name {env_name!r}",
                         "names of letters, digits and '_', not starting with a digit")
        if env_name in RESERVED_ENV:
            raise r.fail(where, "set by sandboxapp itself",
                         f"any name but {', '.join(sorted(RESERVED_ENV))}")
        if not isinstance(env_value, str) or "\0" in env_value:
            raise r.fail(where, f"found {_found(env_value)}", "a string without NUL")
        env.append((env_name, env_value))
    return tuple(env)


def _bind_ro(r: _Reader, table: dict[str, Any], label: str) -> tuple[ReadOnlyBind, ...]:
    texts = r.string_list(table, "bind_ro", label,
                          'an array of "/host/path:/container/path" strings',
                          lambda text, where: None)
    binds: list[ReadOnlyBind] = []
    for index, text in enumerate(texts):
        where = f"{label}[{index}]"
        host_text, _, container_text = text.partition(":")
        container_text = container_text or host_text
        if not host_text.startswith("/"):
            raise r.fail(where, f"found {text!r}",
                         '"/host/path:/container/path" with absolute paths')
        host = r.container_path(host_text, where, side="host")
        binds.append(ReadOnlyBind(host, r.container_path(container_text, where)))
    return tuple(binds)


def _downloads(r: _Reader, table: dict[str, Any], label: str) -> str | None:
    allowed = ("the name of a directory to make in your download directory, e.g. "
               '"Firefox (sandbox)": no \'/\', not starting with \'.\', no control characters, '
               "255 bytes at most")
    if "downloads" not in table:
        return None
    name = r.value(table, "downloads", label, str, allowed)
    if (not name or "/" in name or name.startswith(".") or len(name.encode()) > 255
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise r.fail(label, f"found {name!r}", allowed)
    return name


def _table(section: str) -> Reader:
    def read(r: _Reader, table: dict[str, Any], label: str) -> dict[str, Any]:
        value = table.get(section, {})
        if not isinstance(value, dict):
            raise r.fail(label, f"found {_found(value)}", f"a table [{section}]")
        return _section(r, value, section, f"{section}.")
    return read


# The README's headings of the sections, in its example profile.
SECTION_HEADINGS = {
    "image": "[image]",
    "image.repositories": "[[image.repositories]]    # optional extra apt repositories, each "
                          "checked against its own key",
    "sandbox": "[sandbox]",
}

KEYS: tuple[Key, ...] = (
    Key("", "description", _description,
        'description = "Firefox ESR web browser"   # optional, one line'),
    Key("", "command", _command,
        'command = ["firefox-esr"]                  # argv in the container; `run P -- ARGS` '
        "appends ARGS"),
    Key("", "image", _table("image"), ""),
    Key("", "sandbox", _table("sandbox"), ""),
    Key("image", "suite", _suite,
        'suite = "bookworm"                         # Debian suite or codename (default '
        '"bookworm")'),
    Key("image", "packages", _packages,
        'packages = ["firefox-esr", "libpulse0"]    # installed with --no-install-recommends'),
    Key("image", "mirror", _mirror,
        'mirror = "http://…/debian"                 # optional; default: the one debootstrap '
        "uses"),
    Key("image", "repositories", _repositories, ""),
    Key("image", "update_after_days", _days,
        "update_after_days = 7     # an image older than this is updated before a launch, or "
        "named"),
    Key("image", "auto_update", _flag(False),
        "auto_update = true        # update it first (default false: a warning with the "
        "command)"),
    Key("image.repositories", "uri", _uri, 'uri = "http://127.0.0.1:8000/"'),
    Key("image.repositories", "suite", _repository_suite,
        'suite = "./"              # a suite name, or a flat repository\'s path ending in "/"'),
    Key("image.repositories", "components", _components,
        "components = []           # default [\"main\"]; none for a flat repository"),
    Key("image.repositories", "key", _signing_key,
        'key = "/etc/sandboxapp/keys/example.asc"   # the repository\'s signing key, on the '
        "host"),
    Key("sandbox", "stateless", _flag(True),
        "stateless = true          # every run starts from the pristine image (default true); "
        "false\n"
        "                          # keeps the app's changes for that user's next run, in "
        ".state/ of the store\n"
        "                          # (sandboxapp reset PROFILE drops them)"),
    Key("sandbox", "x11", _x11,
        "x11 = true                # shows windows, on an X server of its own nested in the "
        "display\n"
        '                          # (default false); "trusted": on the display itself (see '
        "below)"),
    Key("sandbox", "wayland", _flag(False),
        "wayland = true            # in a Wayland session, shows windows on the compositor "
        "itself\n"
        "                          # where it offers no client more than any may have "
        "(default\n"
        "                          # false; elsewhere x11 = true's X server of its own)"),
    Key("sandbox", "clipboard", _clipboard,
        'clipboard = "focus"       # with x11 = true, text crosses only in answer to you: '
        '"focus"\n'
        "                          # (in when you focus its window, out when you copy there), "
        '"in",\n'
        '                          # "out" or "none" (default "focus")'),
    Key("sandbox", "pulseaudio", _flag(False),
        "pulseaudio = true         # may play sound (default false)"),
    Key("sandbox", "microphone", _flag(False),
        "microphone = false        # may also record from a microphone, never the desktop's "
        "sound\n"
        "                          # (default false)"),
    Key("sandbox", "session_bus", _flag(False),
        "session_bus = true        # a D-Bus session bus of the sandbox's own (default false)"),
    Key("sandbox", "file_chooser", _flag(False),
        "file_chooser = true       # with session_bus, a file dialog on your desktop: the files "
        "you\n"
        "                          # choose there, and no others, are bound into the sandbox "
        "(default\n"
        "                          # false)"),
    Key("sandbox", "network", _network,
        'network = "host"          # "host": the host\'s network; "none": loopback only '
        '(default "none")'),
    Key("sandbox", "persist", _persist,
        'persist = ["/root/.config/mozilla"]        # container directories kept between runs'),
    Key("sandbox", "env", _env,
        'env = { MOZ_ENABLE_WAYLAND = "0" }         # extra environment in the container'),
    Key("sandbox", "bind_ro", _bind_ro,
        'bind_ro = ["/usr/share/fonts:/usr/local/share/fonts"]  # host path:container path, '
        "read-only"),
    Key("sandbox", "downloads", _downloads,
        'downloads = "Firefox (sandbox)"            # a directory of its own in your download '
        "directory\n"
        f"                          # (XDG DOWNLOAD, ~/Downloads), its {DOWNLOADS_CONTAINER_DIR}:"
        " it sees\n"
        "                          # no other file of yours there (default: none)"),
)


def _section(r: _Reader, table: dict[str, Any], section: str, prefix: str) -> dict[str, Any]:
    """Every key of a section, read from its table (no other key is allowed there)."""
    keys = [key for key in KEYS if key.section == section]
    r.no_unknown_keys(table, tuple(key.name for key in keys), prefix=prefix)
    return {key.name: key.read(r, table, f"{prefix}{key.name}") for key in keys}


def readme_example() -> str:
    """The README's example profile, every key in it."""
    blocks = []
    for section in ("", *SECTION_HEADINGS):
        lines = [SECTION_HEADINGS[section]] if section else []
        lines += [key.readme for key in KEYS if key.section == section and key.readme]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def parse_profile(name: str, path: Path, origin: str, doc: dict[str, Any]) -> Profile:
    """Validate a parsed TOML document into a Profile (pure: no file system access)."""
    r = _Reader(path)
    top = _section(r, doc, "", "")
    image, sandbox = top["image"], top["sandbox"]
    _no_overlap(
        r,
        [(f"sandbox.persist[{i}]", p) for i, p in enumerate(sandbox["persist"])]
        + [(f"sandbox.bind_ro[{i}]", b.container) for i, b in enumerate(sandbox["bind_ro"])]
        + ([("sandbox.downloads", DOWNLOADS_CONTAINER_DIR)] if sandbox["downloads"] else []),
    )
    if sandbox["file_chooser"] and not sandbox["session_bus"]:
        raise r.fail("sandbox.file_chooser", "true without session_bus = true",
                     "file_chooser = true only with session_bus = true: the portal is on the "
                     "sandbox's own session bus")
    return Profile(
        name=name, path=path, origin=origin, command=top["command"],
        description=top["description"],
        image=ImageSpec(suite=image["suite"], packages=image["packages"],
                        mirror=image["mirror"], repositories=image["repositories"]),
        updates=UpdatePolicy(update_after_days=image["update_after_days"],
                             auto_update=image["auto_update"]),
        sandbox=SandboxSpec(**sandbox),
    )
