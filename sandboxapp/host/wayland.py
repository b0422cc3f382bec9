"""The user's Wayland compositor as a sandbox would meet it: which globals it offers every
client, and which way a sandbox may reach it.

A compositor's socket offers more than the core protocol: sway 1.7 gives any client
screencopy, the clipboard at any time (data-control), virtual keyboards and pointers and more.
A sandbox may have the compositor's own socket only where everything it offers is on
ALLOWED_GLOBALS; where the compositor has wp_security_context_manager_v1 (sway >= 1.9, KWin 6,
labwc) a socket registered through it makes the compositor itself treat the sandbox's clients
as sandboxed; anywhere else the sandbox gets an X server of its own (host/nested.py).

pywayland (libwayland's bindings) is the client: it is imported only where a compositor is
asked, and every wait on the compositor is bounded.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxapp.errors import ExitStatus, SandboxError

SECURITY_CONTEXT = "wp_security_context_manager_v1"
# The sandbox engine a registered socket names (wp_security_context_v1's set_sandbox_engine).
ENGINE = "sandboxapp"
# The name of a socket registered as a sandbox's, in a directory of the launcher's.
SANDBOX_SOCKET = "wayland-0"
# How long the compositor may take to answer the question of its globals (it answers at
# once: 10 ms for weston, 40 ms for sway, 100 ms for mutter, counted from its start).
PROBE_TIMEOUT = 2.0
# A compositor offers a few dozen globals (sway 1.7: 38): one that offers more is refused.
MAX_GLOBALS = 256

# What any client of a desktop may have: a global here gives a client nothing of another
# client's (its windows, its input, its clipboard) and nothing of the user's that the user did
# not hand it by focusing its window. Each says why.
ALLOWED_GLOBALS: Mapping[str, str] = {
    "wl_compositor": "surfaces of its own",
    "wl_subcompositor": "sub-surfaces of its own surfaces",
    "wl_shm": "shared-memory buffers it made itself",
    "wl_output": "the screens' size and scale, to draw at the right size",
    "zxdg_output_manager_v1": "the screens' logical size and names, to draw at the right size",
    "wl_seat": "the keyboard and pointer, delivered only while its own surface has the focus",
    "wl_data_device_manager": "the clipboard and drag-and-drop, offered only to the focused "
                              "client and only as the user copies or drags",
    "zwp_primary_selection_device_manager_v1": "the primary selection, like the clipboard "
                                               "offered only to the focused client",
    "xdg_wm_base": "top-level windows and pop-ups of its own",
    "zxdg_decoration_manager_v1": "asks who draws its own windows' borders",
    "org_kde_kwin_server_decoration_manager": "asks who draws its own windows' borders",
    "gtk_shell1": "GNOME's extras for its own windows (its menus, its startup notification, "
                  "the system bell)",
    "wp_viewporter": "scaling and cropping of its own surfaces",
    "wp_presentation": "when its own frames were shown",
    "wp_single_pixel_buffer_manager_v1": "one-colour buffers for its own surfaces",
    "wp_fractional_scale_manager_v1": "the scale its own surfaces are shown at",
    "wp_cursor_shape_manager_v1": "the pointer's shape over its own surfaces",
    "wp_content_type_manager_v1": "a hint of what its own surfaces show",
    "wp_tearing_control_manager_v1": "a hint for its own surfaces' updates",
    "zwp_linux_dmabuf_v1": "GPU buffers it made itself",
    "zwp_linux_explicit_synchronization_v1": "fences for its own buffers",
    "wp_linux_drm_syncobj_manager_v1": "fences for its own buffers",
    "zwp_pointer_gestures_v1": "touchpad gestures, while its own surface has the pointer",
    "zwp_relative_pointer_manager_v1": "pointer motion, while its own surface has the pointer",
    "zwp_pointer_constraints_v1": "locks the pointer to its own surface, only while focused",
    "zwp_tablet_manager_v2": "a drawing tablet's input, while over its own surface",
    "zwp_text_input_manager_v3": "the input method's text, for its own focused surface",
    "zwp_keyboard_shortcuts_inhibit_manager_v1": "the desktop's shortcuts for its own focused "
                                                 "surface, where the compositor asks the user",
    "zwp_idle_inhibit_manager_v1": "no blanking while its own surface is visible (a video)",
    "xdg_activation_v1": "focus for its own windows only with a token the desktop gave it",
    "zxdg_exporter_v1": "a handle to one of its own windows",
    "zxdg_exporter_v2": "a handle to one of its own windows",
    "zxdg_importer_v1": "its window as a dialog of a window whose handle it was given",
    "zxdg_importer_v2": "its window as a dialog of a window whose handle it was given",
    "zwp_input_timestamps_manager_v1": "when its own input events happened",
    "wp_alpha_modifier_v1": "the transparency of its own surfaces",
}


class WaylandPath(enum.Enum):
    """How a sandbox reaches the user's Wayland session."""

    # A socket of the sandbox's own, registered through wp_security_context_manager_v1.
    SECURITY_CONTEXT = enum.auto()
    # The compositor's own socket: everything it offers any client is on ALLOWED_GLOBALS.
    COMPOSITOR = enum.auto()
    # Not Wayland: the X server of the sandbox's own, nested in the user's display.
    NESTED_X = enum.auto()


@dataclass(frozen=True)
class Compositor:
    socket: Path
    # Every global the compositor offers a client of its socket.
    offered: frozenset[str]

    @property
    def beyond_allowed(self) -> list[str]:
        return sorted(self.offered - ALLOWED_GLOBALS.keys() - {SECURITY_CONTEXT})

    def path(self) -> tuple[WaylandPath, str]:
        """The way a sandbox reaches this compositor, and why."""
        if SECURITY_CONTEXT in self.offered:
            return WaylandPath.SECURITY_CONTEXT, (
                f"the compositor offers {SECURITY_CONTEXT}: a socket of the sandbox's own, "
                "whose clients the compositor treats as sandboxed")
        beyond = self.beyond_allowed
        if not beyond:
            return WaylandPath.COMPOSITOR, ("every global the compositor offers is one any "
                                            "client may have")
        return WaylandPath.NESTED_X, (f"the compositor offers every client {named(beyond)}, "
                                      f"and no {SECURITY_CONTEXT} to keep a sandbox from them")


def named(globals_: list[str]) -> str:
    """Globals as a line says them: the first six, and how many more."""
    return ", ".join(globals_[:6]) + (f" and {len(globals_) - 6} more" if len(globals_) > 6
                                      else "")


@dataclass(frozen=True)
class WaylandChoice:
    """The way a launch reaches the user's Wayland session, and why."""

    socket: Path
    path: WaylandPath
    why: str
    # The compositor could not be asked (a stale WAYLAND_DISPLAY, a compositor that hangs):
    # the launch shows the app through X all the same, and doctor warns.
    unanswered: bool = False

    @property
    def native(self) -> bool:
        """The app's windows are the compositor's own (not an X server's of its own)."""
        return self.path is not WaylandPath.NESTED_X


def choose_path(environ: Mapping[str, str]) -> WaylandChoice | None:
    """How a sandbox may reach the session's compositor; None outside a Wayland session."""
    socket_path = compositor_socket(environ)
    if socket_path is None:
        return None
    try:
        path, why = probe(socket_path).path()
        if path is WaylandPath.SECURITY_CONTEXT:
            # What the compositor offers a sandboxed client is its own judgement: asked as
            # one, on a socket registered for the question alone.
            beyond = sandboxed_offer(socket_path).beyond_allowed
            if beyond:
                path, why = WaylandPath.NESTED_X, (
                    f"the compositor offers {SECURITY_CONTEXT}, but still offers the clients "
                    f"it treats as sandboxed {named(beyond)}")
    except SandboxError as error:
        return WaylandChoice(socket_path, WaylandPath.NESTED_X, error.message, unanswered=True)
    return WaylandChoice(socket_path, path, why)


def compositor_socket(environ: Mapping[str, str]) -> Path | None:
    """The session's compositor socket: WAYLAND_DISPLAY, a name in XDG_RUNTIME_DIR or a path;
    None outside a Wayland session."""
    name = environ.get("WAYLAND_DISPLAY")
    if not name:
        return None
    if name.startswith("/"):
        return Path(name)
    runtime = environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise SandboxError(f"WAYLAND_DISPLAY={name!r} names a socket in XDG_RUNTIME_DIR, "
                           "which is not set",
                           hint="set XDG_RUNTIME_DIR (e.g. /run/user/$(id -u)), or unset "
                                "WAYLAND_DISPLAY to use X",
                           status=ExitStatus.LAUNCHER)
    return Path(runtime) / name


@contextlib.contextmanager
def _client(path: Path, timeout: float,
            check: Callable[[], None] = lambda: None,
            ) -> Iterator[tuple[Any, Callable[[], None]]]:
    """A pywayland connection to the compositor at path, and its round trip: every request
    made so far answered, before timeout from now. Each turn is checked, for the time (a
    compositor that keeps talking is as late as a silent one) and by check (which raises:
    pywayland's callbacks cannot); a protocol error ends it as a SandboxError."""
    deadline = time.monotonic() + timeout
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        connection.settimeout(timeout)
        connection.connect(str(path))
    except OSError as exc:
        connection.close()
        raise _unreachable(path, exc.strerror or str(exc)) from None
    connection.setblocking(False)
    from pywayland.client.display import Display

    # The display owns the descriptor from here, and closes it.
    display = Display(os.dup(connection.fileno()))
    connection.close()
    display.connect()

    def roundtrip() -> None:
        done: list[bool] = []
        callback = display.sync()
        callback.dispatcher["done"] = lambda _c, _data: done.append(True)
        display.flush()
        while not done:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([display.get_fd()], [], [], max(0.0, left))
            if not readable or time.monotonic() >= deadline:
                raise _unreachable(path, f"no answer within {timeout:g} s")
            display.read()
            display.dispatch(block=False)
            check()

    try:
        yield display, roundtrip
    except RuntimeError as exc:
        raise _unreachable(path, str(exc)) from None
    finally:
        display.disconnect()


def probe(path: Path, timeout: float = PROBE_TIMEOUT) -> Compositor:
    """Ask the compositor at path which globals it offers a client, within timeout."""
    offered: set[str] = set()
    announced = 0

    def on_global(_registry: object, _name: int, interface: str, _version: int) -> None:
        nonlocal announced
        offered.add(interface)
        announced += 1

    def bounded() -> None:
        if announced > MAX_GLOBALS:
            raise _unreachable(path, f"it offers more than {MAX_GLOBALS} globals")

    with _client(path, timeout, bounded) as (display, roundtrip):
        registry = display.get_registry()
        registry.dispatcher["global"] = on_global
        roundtrip()
    return Compositor(path, frozenset(offered))


def register_sandbox_socket(compositor: Path, listener: socket.socket, app_id: str,
                            instance_id: str, timeout: float = PROBE_TIMEOUT) -> int:
    """Hand the compositor a listening socket as a sandbox's (wp_security_context_v1): it
    treats every client that connects there as sandboxed (engine "sandboxapp", the profile as
    app id, the machine as instance id), and accepts on it until the descriptor returned is
    closed (the read end of a pipe it watches; the compositor keeps the listener when this
    connection ends)."""
    from pywayland.protocol.security_context_v1 import WpSecurityContextManagerV1

    found: dict[str, tuple[int, int]] = {}
    close_read, close_write = os.pipe2(os.O_CLOEXEC)
    try:
        with _client(compositor, timeout) as (display, roundtrip):
            registry = display.get_registry()

            def on_global(_registry: object, name: int, interface: str, version: int) -> None:
                if interface == SECURITY_CONTEXT:
                    found[interface] = (name, version)

            registry.dispatcher["global"] = on_global
            roundtrip()
            if SECURITY_CONTEXT not in found:
                raise _unreachable(compositor, f"it offers no {SECURITY_CONTEXT}")
            name, version = found[SECURITY_CONTEXT]
            manager = registry.bind(name, WpSecurityContextManagerV1, min(version, 1))
            # libwayland sends copies of the descriptors: these stay the launcher's to close.
            context = manager.create_listener(listener.fileno(), close_read)
            context.set_sandbox_engine(ENGINE)
            context.set_app_id(app_id)
            context.set_instance_id(instance_id)
            context.commit()
            context.destroy()
            manager.destroy()
            roundtrip()  # a refused registration is an error here
    except BaseException:
        os.close(close_write)
        raise
    finally:
        os.close(close_read)
    return close_write


def sandboxed_offer(compositor: Path) -> Compositor:
    """What the compositor offers a client it treats as sandboxed: asked on a socket
    registered for the question, in a directory of its own, closed again at once."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sandboxapp-wayland-") as directory:
        path = Path(directory) / SANDBOX_SOCKET
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as listener:
            listener.bind(str(path))
            listener.listen(1)
            close = register_sandbox_socket(compositor, listener, ENGINE, "question")
        try:
            return probe(path)
        finally:
            os.close(close)


def _unreachable(path: Path, why: str) -> SandboxError:
    return SandboxError(f"the Wayland compositor at {path} cannot be asked what it offers: "
                        f"{why}",
                        hint="is the Wayland session running? check WAYLAND_DISPLAY",
                        status=ExitStatus.LAUNCHER)
