"""A profile's TOML document, strictly validated into the dataclasses of model.py.

A mistake in a profile is reported as one line naming the file, the key, what was found and
what is allowed (exit status 2), never as a traceback and never half-applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from sandboxapp.errors import SandboxError
from sandboxapp.profile.model import (
    ENV_NAME,
    MIRROR_URL,
    PACKAGE_NAME,
    RESERVED_CONTAINER_DIRS,
    RESERVED_ENV,
    SUITE_NAME,
    X11_ALLOWED,
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


REPOSITORY_URI = re.compile(r"https?://[^\s\[\]]+")


COMPONENT = re.compile(r"[a-z0-9][a-z0-9/-]*")


def _repositories(r: _Reader, image_table: dict[str, Any]) -> tuple[Repository, ...]:
    allowed = 'an array of tables {uri = "http://…", suite = "…", key = "/path/to/key"}'
    items = r.value(image_table, "repositories", "image.repositories", list, allowed,
                    default=[])
    repositories = []
    for index, item in enumerate(items):
        label = f"image.repositories[{index}]"
        if not isinstance(item, dict):
            raise r.fail(label, f"found {_found(item)}", allowed)
        r.no_unknown_keys(item, ("uri", "suite", "components", "key"), prefix=f"{label}.")
        uri = r.value(item, "uri", f"{label}.uri", str, "an http:// or https:// URL")
        if not REPOSITORY_URI.fullmatch(uri):
            raise r.fail(f"{label}.uri", f"found {uri!r}", "an http:// or https:// URL")
        suite = r.value(item, "suite", f"{label}.suite", str,
                        'a suite name, or a flat repository\'s path ending in "/" (e.g. "./")')
        if not (SUITE_NAME.fullmatch(suite) or re.fullmatch(r"[a-z0-9./-]*/", suite)):
            raise r.fail(f"{label}.suite", f"found {suite!r}",
                         'a suite name, or a path ending in "/" (e.g. "./")')

        def component(word: str, where: str) -> None:
            if not COMPONENT.fullmatch(word):
                raise r.fail(where, f"found {word!r}", "component names such as main")

        default = () if suite.endswith("/") else ("main",)
        components = r.string_list(item, "components", f"{label}.components",
                                   "an array of component names", component) or default
        if suite.endswith("/") and components:
            raise r.fail(f"{label}.components", "components given for a flat repository",
                         "no components when the suite ends in '/'")
        key_text = r.value(item, "key", f"{label}.key", str, "an absolute host path")
        key = r.container_path(key_text, f"{label}.key", side="host")
        repositories.append(Repository(uri, suite, tuple(components), key))
    return tuple(repositories)


def parse_profile(name: str, path: Path, origin: str, doc: dict[str, Any]) -> Profile:
    """Validate a parsed TOML document into a Profile (pure: no file system access)."""
    r = _Reader(path)
    r.no_unknown_keys(doc, ("description", "command", "image", "sandbox"), prefix="")

    description = r.value(doc, "description", "description", str, "a string", default="")
    if "\n" in description:
        raise r.fail("description", "found a line break", "a single line of text")

    def command_word(word: str, label: str) -> None:
        if not word or "\0" in word:
            raise r.fail(label, f"found {word!r}", "non-empty strings without NUL")

    command = r.string_list(
        doc, "command", "command",
        'a non-empty array of strings, the program and its arguments, e.g. ["xeyes"]',
        command_word, required=True,
    )

    image_table = r.table(doc, "image", ("suite", "packages", "mirror", "repositories",
                                         "update_after_days", "auto_update"))
    suite = r.value(image_table, "suite", "image.suite", str,
                    'a Debian suite or codename, e.g. "bookworm"', default="bookworm")
    if not SUITE_NAME.fullmatch(suite):
        raise r.fail("image.suite", f"found {suite!r}",
                     'a Debian suite or codename, e.g. "bookworm"')

    def package(word: str, label: str) -> None:
        if not PACKAGE_NAME.fullmatch(word):
            raise r.fail(label, f"found {word!r}",
                         "Debian package names (a-z, 0-9, '+', '-', '.'; two characters or more)")

    packages = r.string_list(image_table, "packages", "image.packages",
                             "an array of Debian package names", package)
    mirror: str | None = None
    if "mirror" in image_table:
        mirror = r.value(image_table, "mirror", "image.mirror", str, "an http, https or file URL")
        if not MIRROR_URL.fullmatch(mirror):
            raise r.fail("image.mirror", f"found {mirror!r}",
                         "an http://, https:// or file:/// URL of a Debian archive")

    repositories = _repositories(r, image_table)
    days = r.value(image_table, "update_after_days", "image.update_after_days", int,
                   "a whole number of days from 1 to 365", default=7)
    if not 1 <= days <= 365:
        raise r.fail("image.update_after_days", f"found {days}",
                     "a whole number of days from 1 to 365")
    auto_update = r.value(image_table, "auto_update", "image.auto_update", bool,
                          "true or false", default=False)

    sandbox_table = r.table(
        doc, "sandbox",
        ("stateless", "x11", "pulseaudio", "microphone", "session_bus", "network", "persist",
         "env", "bind_ro"),
    )
    flags = {
        key: r.value(sandbox_table, key, f"sandbox.{key}", bool, "true or false", default=default)
        for key, default in (("stateless", True), ("pulseaudio", False), ("microphone", False),
                             ("session_bus", False))
    }
    x11_value = sandbox_table.get("x11", False)
    if type(x11_value) is not bool and x11_value != "trusted":
        raise r.fail("sandbox.x11", f"found {_found(x11_value)}", X11_ALLOWED)
    x11 = X11Access(x11_value)
    network_text = r.value(sandbox_table, "network", "sandbox.network", str,
                           '"host" or "none"', default=Network.NONE.value)
    try:
        network = Network(network_text)
    except ValueError:
        raise r.fail("sandbox.network", f"found {network_text!r}", '"host" or "none"') from None

    persist_allowed = "an array of absolute container directories"
    persist_texts = r.string_list(sandbox_table, "persist", "sandbox.persist", persist_allowed,
                                  lambda text, label: None)
    persist = tuple(
        r.container_path(text, f"sandbox.persist[{i}]") for i, text in enumerate(persist_texts)
    )

    env_table = r.value(sandbox_table, "env", "sandbox.env", dict,
                        "a table of NAME = \"value\" strings", default={})
    env: list[tuple[str, str]] = []
    for env_name, env_value in env_table.items():
        label = f"sandbox.env.{env_name}"
        if not ENV_NAME.fullmatch(env_name):
            raise r.fail(label, f"found name {env_name!r}",
                         "names of letters, digits and '_', not starting with a digit")
        if env_name in RESERVED_ENV:
            raise r.fail(label, "set by sandboxapp itself",
                         f"any name but {', '.join(sorted(RESERVED_ENV))}")
        if not isinstance(env_value, str) or "\0" in env_value:
            raise r.fail(label, f"found {_found(env_value)}", "a string without NUL")
        env.append((env_name, env_value))

    bind_texts = r.string_list(sandbox_table, "bind_ro", "sandbox.bind_ro",
                               'an array of "/host/path:/container/path" strings',
                               lambda text, label: None)
    binds: list[ReadOnlyBind] = []
    for index, text in enumerate(bind_texts):
        label = f"sandbox.bind_ro[{index}]"
        host_text, _, container_text = text.partition(":")
        container_text = container_text or host_text
        if not host_text.startswith("/"):
            raise r.fail(label, f"found {text!r}",
                         '"/host/path:/container/path" with absolute paths')
        host = r.container_path(host_text, label, side="host")
        binds.append(ReadOnlyBind(host, r.container_path(container_text, label)))

    _no_overlap(
        r,
        [(f"sandbox.persist[{i}]", p) for i, p in enumerate(persist)]
        + [(f"sandbox.bind_ro[{i}]", b.container) for i, b in enumerate(binds)],
    )

    return Profile(
        name=name,
        path=path,
        origin=origin,
        command=command,
        description=description,
        image=ImageSpec(suite=suite, packages=packages, mirror=mirror,
                        repositories=repositories),
        updates=UpdatePolicy(update_after_days=days, auto_update=auto_update),
        sandbox=SandboxSpec(
            stateless=flags["stateless"],
            x11=x11,
            pulseaudio=flags["pulseaudio"],
            microphone=flags["microphone"],
            session_bus=flags["session_bus"],
            network=network,
            persist=persist,
            env=tuple(env),
            bind_ro=tuple(binds),
        ),
    )

