"""What a profile is: frozen dataclasses, the names and limits a profile must keep to, and the
error a mistake in one gives (one line, exit status 2)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandboxapp.errors import ExitStatus, SandboxError

X11_ALLOWED = ('true (an untrusted client, kept from other windows), false, or "trusted" (a '
               "trusted client: it can read and type into every window)")


PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


MAX_NAME_LENGTH = 64


SUITE_NAME = re.compile(r"[a-z][a-z0-9.-]*")


# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


MIRROR_URL = re.compile(r"(https?://[^\s/]+|file://)/[^\s]*")


MAX_FILE_SIZE = 1 << 20


# Set by sandboxapp itself for every run: a profile may not override them.
RESERVED_ENV = frozenset(
    {"DISPLAY", "XAUTHORITY", "PULSE_SERVER", "PULSE_CLIENTCONFIG", "PULSE_COOKIE",
     "DBUS_SESSION_BUS_ADDRESS", "container"}
)


# Container paths that belong to the kernel or to nspawn, not to the application.
# Where a profile's downloads directory (sandbox.downloads) is inside: the download directory
# of the container's user, root, whose XDG user directories are the defaults.
DOWNLOADS_CONTAINER_DIR = PurePosixPath("/root/Downloads")

RESERVED_CONTAINER_DIRS = (
    PurePosixPath("/proc"),
    PurePosixPath("/sys"),
    PurePosixPath("/dev"),
    PurePosixPath("/run"),
)


class X11Access(enum.Enum):
    """The profile's x11 key: false, true or "trusted"."""

    NONE = False  # no display
    ISOLATED = True  # an X server of its own, nested in the user's display
    TRUSTED = "trusted"  # a trusted client: it can read and type into every window


class Clipboard(enum.StrEnum):
    """The profile's clipboard key: when text crosses between the user's clipboard and the
    sandbox's nested display (host/clipboard.py), always in answer to the user."""

    FOCUS = "focus"  # both ways: in when the user focuses its window, out when copied there
    IN = "in"  # the user's clipboard into the sandbox only
    OUT = "out"  # the sandbox's copies out to the desktop only
    NONE = "none"  # never


class Network(enum.StrEnum):
    HOST = "host"  # the host's network, as the original recipe shares it
    NONE = "none"  # a private namespace with loopback only


@dataclass(frozen=True)
class Repository:
    """An extra apt repository, signature-checked against its own key."""

    uri: str
    suite: str  # a suite name, or a flat repository's path ending in "/" (e.g. "./")
    components: tuple[str, ...]
    key: PurePosixPath  # host path of the repository's signing key (ASCII-armored or binary)


@dataclass(frozen=True)
class ImageSpec:
    """What the image is built from: a change here makes a built image stale."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ()
    mirror: str | None = None
    repositories: tuple[Repository, ...] = ()


@dataclass(frozen=True)
class UpdatePolicy:
    update_after_days: int = 7
    # Update an image that is too old before a launch, instead of only warning.
    auto_update: bool = False


@dataclass(frozen=True)
class ReadOnlyBind:
    host: PurePosixPath
    container: PurePosixPath


@dataclass(frozen=True)
class SandboxSpec:
    stateless: bool = True
    # x11: the app shows windows, on an X server of its own nested in the user's display
    # (x11 = true), or, where the profile says x11 = "trusted", on the user's display itself,
    # as a client that can read and type into every window.
    x11: X11Access = X11Access.NONE
    # wayland: in a Wayland session, the app's windows on the compositor itself, where its socket
    # offers no client more than any may have (host/wayland.py); else x11 = true's display.
    wayland: bool = False
    clipboard: Clipboard = Clipboard.FOCUS
    pulseaudio: bool = False
    # Recording through the sound server (a microphone); playback needs only pulseaudio.
    microphone: bool = False
    # A D-Bus session bus of the sandbox's own (never the user's): programs that find their
    # running instance over D-Bus, as Firefox does, then get joined launches right.
    session_bus: bool = False
    # file_chooser: the sandbox's session bus has a file chooser portal served by the launcher:
    # a dialog on the user's desktop, and the files chosen there, alone, bound into the sandbox.
    file_chooser: bool = False
    network: Network = Network.NONE
    persist: tuple[PurePosixPath, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    bind_ro: tuple[ReadOnlyBind, ...] = ()
    # The name of a directory of the sandbox's own inside the user's download directory (the
    # XDG user directory DOWNLOAD): the app's downloads land there, and it sees nothing else
    # of the user's files (the directory is its DOWNLOADS_CONTAINER_DIR).
    downloads: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    origin: str  # "user", "system" or "shipped": where the lookup found it
    command: tuple[str, ...]
    description: str = ""
    image: ImageSpec = ImageSpec()
    sandbox: SandboxSpec = SandboxSpec()
    updates: UpdatePolicy = UpdatePolicy()


def invalid(message: str, hint: str | None = None) -> SandboxError:
    return SandboxError(message, hint=hint, status=ExitStatus.USAGE)


def check_profile_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not PROFILE_NAME.fullmatch(name):
        raise invalid(
            f"invalid profile name {name!r}; allowed: lower-case letters, digits, '.', '_' and '-',"
            f" starting with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return name

