"""Real parts for the integration tests: an X server and a sound server like a desktop's.

No mocks: Xvfb with a cookie file (`-auth`) and `-noreset`, as a display manager starts Xorg,
and a PulseAudio daemon with a null sink on a private runtime directory (or PipeWire with its
PulseAudio server, as Debian desktops run it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HarnessError(RuntimeError):
    pass


def require_programs(*names: str) -> None:
    """Fail (never skip) when a tool the tests need is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise HarnessError(
            f"missing {', '.join(missing)}: run scripts/test, which installs what the tests need"
        )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise HarnessError(f"timed out after {timeout}s waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End a server started in a process group of its own, with the helpers it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class XServer:
    display: str  # ":N"
    number: int
    xauthority: Path  # a client cookie file, as a desktop session's XAUTHORITY
    process: subprocess.Popen[bytes]

    def client_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DISPLAY": self.display,
                "XAUTHORITY": str(self.xauthority)}


@contextlib.contextmanager
def x_server(workdir: Path, extra: Sequence[str] = ()) -> Iterator[XServer]:
    """Xvfb as a desktop's X server is (-auth, -noreset); extra: more of its options."""
    require_programs("Xvfb", "xauth")
    cookie = secrets.token_hex(16)
    server_auth = workdir / "server.xauth"
    client_auth = workdir / "client.xauth"
    # The server loads every cookie in its -auth file, whatever display the entry names.
    subprocess.run(["xauth", "-f", str(server_auth), "add", ":0", "MIT-MAGIC-COOKIE-1", cookie],
                   check=True, capture_output=True)
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-auth", str(server_auth), "-noreset",
         "-nolisten", "tcp", "-screen", "0", "1280x800x24", *extra],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            number_text = pipe.readline().strip()
        if not number_text:
            raise HarnessError("Xvfb did not start")
        number = int(number_text)
        subprocess.run(
            ["xauth", "-f", str(client_auth), "add", f":{number}", "MIT-MAGIC-COOKIE-1", cookie],
            check=True, capture_output=True,
        )
        _wait_for(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), 10, "the X socket")
        yield XServer(f":{number}", number, client_auth, process)
    finally:
        stop(process)


@dataclass
class SoundServer:
    runtime_dir: Path
    socket: Path  # the server's own native socket, as the user's session has it
    process: subprocess.Popen[bytes]
    kind: str = "pulseaudio"  # or "pipewire"
    # Where the server's processes write their messages, where the harness keeps them.
    log: Path | None = None

    def said(self) -> str:
        """The end of what the server's processes said: a failing test shows it."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-4000:]

    def client_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "PULSE_SERVER": f"unix:{self.socket}",
                "HOME": str(self.runtime_dir)}

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A pulsectl client of this server (libpulse, like any program of the user's), with
        the server's cookie."""
        import pulsectl

        previous = os.environ.get("PULSE_COOKIE")
        # libpulse reads it from the environment when the client connects.
        os.environ["PULSE_COOKIE"] = str(self.runtime_dir / ".config" / "pulse" / "cookie")
        try:
            with pulsectl.Pulse("sandboxapp tests", server=f"unix:{self.socket}") as pulse:
                yield pulse
        finally:
            if previous is None:
                os.environ.pop("PULSE_COOKIE", None)
            else:
                os.environ["PULSE_COOKIE"] = previous

    def modules(self) -> list[tuple[int, str, str]]:
        """(index, name, argument) of every module the server has loaded."""
        with self.client() as pulse:
            return [(m.index, m.name, m.argument or "") for m in pulse.module_list()]

    def answers(self) -> bool:
        import pulsectl

        try:
            with self.client() as pulse:
                pulse.server_info()
        except pulsectl.PulseError:
            return False
        return True


# What a Debian desktop's PulseAudio loads (/etc/pulse/default.pa), less the lines that look
# for hardware or a login manager this machine does not have; a null sink stands in for the
# speakers and a sine source for a microphone.
HARDWARE_MODULES = ("module-udev-detect", "module-detect", "module-bluetooth-discover",
                    "module-jackdbus-detect", "module-systemd-login", "module-console-kit")
TEST_SINK = "sandboxapp_test_sink"
TEST_MICROPHONE = "sandboxapp_test_mic"


def desktop_config(default_pa: Path = Path("/etc/pulse/default.pa")) -> str:
    lines = []
    for line in default_pa.read_text().splitlines():
        words = line.split()
        if words[:1] == ["load-module"] and len(words) > 1 and words[1] in HARDWARE_MODULES:
            continue
        if words[:1] == [".include"]:
            continue  # the machine's drop-ins are not the test's
        lines.append(line)
    if not any(line.startswith("load-module module-filter-apply") for line in lines):
        raise HarnessError(f"{default_pa} is not Debian's: it loads no module-filter-apply")
    lines += [".fail",
              f"load-module module-null-sink sink_name={TEST_SINK}",
              f"load-module module-sine-source source_name={TEST_MICROPHONE} frequency=440",
              f"set-default-sink {TEST_SINK}"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def sound_server(workdir: Path, run_as: tuple[int, int] | None = None) -> Iterator[SoundServer]:
    """A PulseAudio daemon loading what a Debian desktop's does (desktop_config); run_as (uid,
    gid) runs it as that user, as a desktop session does."""
    require_programs("pulseaudio", "pactl")
    runtime = Path(tempfile.mkdtemp(prefix="pulse-", dir=workdir))
    runtime.chmod(0o700)
    config = runtime / "default.pa"
    config.write_text(desktop_config())
    prefix: list[str] = []
    if run_as is not None:
        os.chown(runtime, *run_as)
        prefix = ["setpriv", f"--reuid={run_as[0]}", f"--regid={run_as[1]}", "--init-groups"]
    socket = runtime / "pulse" / "native"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_RUNTIME_DIR": str(runtime),
           "HOME": str(runtime)}
    process = subprocess.Popen(
        [*prefix, "pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--disallow-exit",
         "-F", str(config), "--log-target=stderr"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        server = SoundServer(runtime, socket, process)
        deadline = time.monotonic() + 15
        while True:
            if server.answers():
                break
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise HarnessError(f"PulseAudio did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        stop(process)


@contextlib.contextmanager
def pipewire_server(workdir: Path) -> Iterator[SoundServer]:
    """PipeWire with WirePlumber and its PulseAudio server, as Debian's desktops run it (on a
    D-Bus session bus of its own, which WirePlumber needs), with a null sink for speakers."""
    require_programs("pipewire", "pipewire-pulse", "wireplumber", "dbus-run-session", "pactl")
    runtime = Path(tempfile.mkdtemp(prefix="pipewire-", dir=workdir))
    runtime.chmod(0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_RUNTIME_DIR": str(runtime),
           "HOME": str(runtime)}
    script = ("pipewire & while [ ! -e \"$XDG_RUNTIME_DIR/pipewire-0\" ]; do sleep 0.05; done; "
              "wireplumber & pipewire-pulse & wait")
    log = workdir / f"{runtime.name}.log"
    with log.open("wb") as messages:
        group = subprocess.Popen(["dbus-run-session", "--", "/bin/sh", "-c", script], env=env,
                                 stdout=messages, stderr=messages, start_new_session=True)
    try:
        server = SoundServer(runtime, runtime / "pulse" / "native", group, "pipewire", log)
        _wait_for(server.answers, 15, "PipeWire's PulseAudio server")
        subprocess.run(["pactl", "load-module", "module-null-sink", f"sink_name={TEST_SINK}"],
                       env=server.client_env(), check=True, capture_output=True, timeout=10)
        _wait_for(lambda: _has_sink(server, TEST_SINK), 10, "PipeWire's null sink")
        # WirePlumber takes a moment more before the new sink can be the default.
        _wait_for(lambda: subprocess.run(
            ["pactl", "set-default-sink", TEST_SINK], env=server.client_env(),
            capture_output=True, timeout=10, check=False).returncode == 0,
            10, "PipeWire's null sink as the default")
        yield server
    finally:
        stop_group(group)


def _has_sink(server: SoundServer, name: str) -> bool:
    with server.client() as pulse:
        return any(sink.name == name for sink in pulse.sink_list())


@dataclass
class HostUser:
    name: str
    uid: int
    gid: int
    home: Path
    runtime: Path  # like /run/user/UID


@contextlib.contextmanager
def host_user(prefix: str) -> Iterator[HostUser]:
    """A throw-away login user, with a home and a runtime directory of its own (below /tmp,
    which the user may pass through: a test's own directories are root's alone). What it ran
    and owned goes with it."""
    require_programs("useradd", "userdel", "pkill")
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    entry = pwd.getpwnam(name)
    runtime = Path(tempfile.mkdtemp(prefix=f"runtime-{name}-", dir="/tmp"))
    os.chown(runtime, entry.pw_uid, entry.pw_gid)
    try:
        yield HostUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), runtime)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.2)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        shutil.rmtree(runtime, ignore_errors=True)


@dataclass
class DesktopPortal:
    """A desktop session's bus for a user, on which xdg-desktop-portal and its GTK backend
    start when first asked, their dialogs on the session's X server."""

    user: HostUser
    bus: Path
    xauthority: Path
    display: str

    def env(self) -> dict[str, str]:
        """What a program started in that session has in its environment."""
        return {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.bus}",
                "XDG_RUNTIME_DIR": str(self.user.runtime), "DISPLAY": self.display,
                "XAUTHORITY": str(self.xauthority), "HOME": str(self.user.home)}

    def window(self, name: str, timeout: float = 20) -> str:
        """The id of the visible window of that exact name (a dialog), once it shows."""
        found = subprocess.run(
            ["timeout", str(timeout), "xdotool", "search", "--sync", "--onlyvisible",
             "--name", f"^{re.escape(name)}$"], env=self._x_env(), capture_output=True,
            text=True, check=False)
        if not found.stdout.split():
            raise HarnessError(f"no window {name!r} showed: {found.stderr}")
        return found.stdout.split()[0]

    def gone(self, name: str, timeout: float = 20) -> bool:
        """Whether no visible window of that exact name is left, within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", f"^{re.escape(name)}$"],
                env=self._x_env(), capture_output=True, text=True, check=False)
            if not found.stdout.split():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def dialog(self, timeout: float = 20) -> tuple[str, str]:
        """The portal's dialog window (the GTK backend's class), once it shows: its id and
        its name."""
        found = subprocess.run(
            ["timeout", str(timeout), "xdotool", "search", "--sync", "--onlyvisible",
             "--class", "xdg-desktop-portal-gtk"], env=self._x_env(), capture_output=True,
            text=True, check=False)
        if not found.stdout.split():
            raise HarnessError(f"no dialog of the portal showed: {found.stderr}")
        window = found.stdout.split()[0]
        name = subprocess.run(["xdotool", "getwindowname", window], env=self._x_env(),
                              capture_output=True, text=True, check=False).stdout.strip()
        return window, name

    def type_path(self, window: str, path: str) -> None:
        """Answer a GTK file dialog as a user does: Ctrl+L, the path, Return."""
        env = self._x_env()
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
        subprocess.run(["xdotool", "key", "--clearmodifiers", "ctrl+l"], env=env, check=True)
        subprocess.run(["xdotool", "type", "--delay", "10", path], env=env, check=True)
        time.sleep(0.5)  # GTK completes the location before it takes Return
        subprocess.run(["xdotool", "key", "--clearmodifiers", "Return"], env=env, check=True)

    def type_save_path(self, window: str, path: str) -> None:
        """Answer a GTK save dialog: the whole name field replaced by the path, Return."""
        env = self._x_env()
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
        subprocess.run(["xdotool", "key", "--clearmodifiers", "ctrl+a"], env=env, check=True)
        subprocess.run(["xdotool", "type", "--delay", "10", path], env=env, check=True)
        time.sleep(0.5)
        subprocess.run(["xdotool", "key", "--clearmodifiers", "Return"], env=env, check=True)

    def cancel(self, window: str) -> None:
        self.press(window, "alt+c")

    def press(self, window: str, keys: str) -> None:
        """A key press in the dialog (alt+c: Cancel; alt+s: Save)."""
        env = self._x_env()
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
        time.sleep(0.5)
        subprocess.run(["xdotool", "key", "--clearmodifiers", keys], env=env, check=True)

    def _x_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "DISPLAY": self.display,
                "XAUTHORITY": str(self.xauthority)}

    def portal_processes(self) -> list[tuple[str, int]]:
        """The portal's processes: (name, UID) each."""
        found = subprocess.run(["ps", "-eo", "comm=,uid="], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        return [(line.split()[0], int(line.split()[1])) for line in found
                if line.strip().startswith("xdg-desktop-por")]


@contextlib.contextmanager
def desktop_portal(workdir: Path, xserver: XServer) -> Iterator[DesktopPortal]:
    """A throw-away user's desktop session bus with xdg-desktop-portal and its GTK backend
    (activated by the bus, as on a desktop without systemd), dialogs on xserver."""
    require_programs("dbus-daemon", "xdotool", "/usr/libexec/xdg-desktop-portal",
                     "/usr/libexec/xdg-desktop-portal-gtk")
    with host_user("desk") as user:
        xauthority = user.runtime / "Xauthority"
        shutil.copyfile(xserver.xauthority, xauthority)
        os.chown(xauthority, user.uid, user.gid)
        bus = user.runtime / "bus"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(user.home),
               "XDG_RUNTIME_DIR": str(user.runtime), "DISPLAY": xserver.display,
               "XAUTHORITY": str(xauthority), "NO_AT_BRIDGE": "1"}
        log = workdir / "portal-bus.log"
        with log.open("wb") as stream:
            process = subprocess.Popen(
                ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
                 "--", "dbus-daemon", "--session", f"--address=unix:path={bus}", "--nofork"],
                env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(bus.exists, 10, "the desktop's session bus")
            yield DesktopPortal(user, bus, xauthority, xserver.display)
        finally:
            stop_group(process)


@contextlib.contextmanager
def gnome_xwayland(workdir: Path) -> Iterator[XServer]:
    """GNOME's compositor (mutter) run headless, as a plain user as a GNOME session runs it,
    and its Xwayland (no SECURITY extension): the X server X programs on a default Debian 12
    desktop talk to. Its display number and cookie file are the ones mutter chose."""
    require_programs("mutter", "Xwayland", "dbus-run-session", "setpriv", "xdpyinfo")
    with host_user("gnome") as user:
        log = workdir / "mutter.log"
        with log.open("wb") as stream:
            process = subprocess.Popen(
                ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
                 "env", "-i", "PATH=/usr/bin:/bin", f"HOME={user.home}",
                 f"XDG_RUNTIME_DIR={user.runtime}", "dbus-run-session", "--",
                 "mutter", "--headless", "--wayland", "--virtual-monitor", "1280x800",
                 "--wayland-display=wayland-m"],
                stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            found: list[int] = []

            def started() -> bool:
                if process.poll() is not None:
                    raise HarnessError(f"mutter ended: {log.read_text(errors='replace')}")
                for line in log.read_text(errors="replace").splitlines():
                    if "Using public X11 display :" in line:
                        found.append(int(line.split("display :")[1].split(",")[0]))
                        return True
                return False

            _wait_for(started, 30, "mutter's Xwayland display")
            number = found[0]
            cookies = list(user.runtime.glob(".mutter-Xwaylandauth.*"))
            if len(cookies) != 1:
                raise HarnessError(f"mutter's Xwayland cookie file: found {cookies}")
            server = XServer(f":{number}", number, cookies[0], process)  # type: ignore[arg-type]
            _wait_for(lambda: subprocess.run(
                ["xdpyinfo"], env=server.client_env(), capture_output=True,
                check=False).returncode == 0, 30, "Xwayland to answer")
            yield server
        finally:
            stop_group(process)


@dataclass
class Compositor:
    """A Wayland compositor run headless as a plain user: its socket, in the user's runtime
    directory (0700), as a desktop session's is."""

    kind: str
    user: HostUser
    socket: Path
    process: subprocess.Popen[bytes]

    def client_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(self.user.runtime),
                "WAYLAND_DISPLAY": self.socket.name}


# How each compositor is run headless: its command, its environment and the name
# of its socket. mutter needs a session bus; sway refuses to run as root.
COMPOSITORS = {
    "mutter": (["dbus-run-session", "--", "mutter", "--headless", "--wayland", "--no-x11",
                "--virtual-monitor", "1280x800", "--wayland-display=wayland-m"], {}, "wayland-m"),
    "sway": (["sway", "-c", "/dev/null"],
             {"WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1",
              "WLR_RENDERER": "pixman"}, "wayland-1"),
    "weston": (["weston", "--backend=headless-backend.so", "--socket=wayland-w"], {},
               "wayland-w"),
    # Debian 13's sway (1.10) and labwc (0.8), which offer wp_security_context_manager_v1:
    # run from a root of their own (trixie_root), the user's runtime directory bound into it
    # at the same path.
    "sway-trixie": (["sway", "-c", "/dev/null"],
                    {"WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1",
                     "WLR_RENDERER": "pixman"}, "wayland-1"),
    "labwc-trixie": (["labwc"],
                     {"WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1",
                      "WLR_RENDERER": "pixman"}, "wayland-0"),
}
# Where trixie_root keeps Debian 13 with sway and labwc between test runs (a minute to make).
TRIXIE_ROOT = Path(os.environ.get("SANDBOXAPP_TEST_TRIXIE_ROOT",
                                  "/var/cache/sandboxapp-tests/trixie-sway"))


def trixie_root() -> Path:
    """Debian 13 (trixie) with sway and labwc, debootstrapped once and kept (TRIXIE_ROOT)."""
    if (TRIXIE_ROOT / "usr" / "bin" / "labwc").exists():
        # The root directory of a system: its users look things up in it (one made by an
        # earlier harness kept mkdtemp's 0700).
        TRIXIE_ROOT.chmod(0o755)
        return TRIXIE_ROOT
    require_programs("debootstrap")
    TRIXIE_ROOT.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".trixie-", dir=TRIXIE_ROOT.parent))
    staging.chmod(0o755)
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=sway,labwc", "trixie", str(staging),
             "http://deb.debian.org/debian"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise HarnessError(f"debootstrap of trixie failed: {result.stdout[-2000:]}")
        if TRIXIE_ROOT.exists():
            shutil.rmtree(TRIXIE_ROOT)  # one made before labwc was in it
        staging.rename(TRIXIE_ROOT)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return TRIXIE_ROOT


def _in_trixie(user: HostUser, argv: list[str]) -> list[str]:
    """argv run in trixie_root as user, in a mount namespace of its own where that root has
    /proc, /dev, a /tmp of its own (what a compositor of an earlier run left there, such as
    an X socket directory of another user's, is not this one's) and the user's runtime
    directory (at its own path)."""
    root = trixie_root()
    script = ('set -e; user=$1 root=$2 runtime=$3; shift 3; mount --make-rprivate /; '
              'mount --rbind /dev "$root/dev"; mount -t proc proc "$root/proc"; '
              'mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"; '
              'mkdir -p "$root$runtime"; mount --bind "$runtime" "$root$runtime"; '
              'exec chroot --userspec="$user" "$root" "$@"')
    return ["unshare", "--mount", "--fork", "--", "/bin/sh", "-c", script, "sh",
            f"{user.uid}:{user.gid}", str(root), str(user.runtime), *argv]


@contextlib.contextmanager
def wayland_compositor(workdir: Path, kind: str,
                       user: HostUser | None = None) -> Iterator[Compositor]:
    """kind run headless as user (a throw-away one where None), its socket in the user's
    runtime directory."""
    argv, extra_env, name = COMPOSITORS[kind]
    if kind.endswith("-trixie"):
        require_programs("unshare", "chroot")
    else:
        require_programs(argv[0] if kind != "mutter" else "mutter", "setpriv", "dbus-run-session")
    with contextlib.ExitStack() as stack:
        if user is None:
            user = stack.enter_context(host_user(kind))
        log = workdir / f"{kind}.log"
        env = [f"{key}={value}" for key, value in extra_env.items()]
        command = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={user.home}",
                   f"XDG_RUNTIME_DIR={user.runtime}", *env, *argv]
        if kind.endswith("-trixie"):
            command = _in_trixie(user, [*command[:3], "HOME=/tmp", *command[4:]])
        else:
            command = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}",
                       "--init-groups", *command]
        with log.open("wb") as stream:
            process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        stack.callback(stop_group, process)
        socket_path = user.runtime / name

        def listening() -> bool:
            if process.poll() is not None:
                raise HarnessError(f"{kind} ended: {log.read_text(errors='replace')}")
            return socket_path.is_socket()

        _wait_for(listening, 30, f"{kind}'s socket")
        yield Compositor(kind, user, socket_path, process)


# A Wayland client for a sandbox with only python3 in it: the globals the compositor offers
# it, a line each (the wire format: object id, then size << 16 | opcode, in host order).
LIST_GLOBALS = """import os, socket, struct
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["WAYLAND_DISPLAY"])
s.sendall(struct.pack("=III", 1, 12 << 16 | 1, 2) + struct.pack("=III", 1, 12 << 16 | 0, 3))
data = b""
while True:
    while len(data) < 8 or len(data) < struct.unpack_from("=II", data)[1] >> 16:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("the compositor hung up")
        data += chunk
    obj, word = struct.unpack_from("=II", data)
    size, opcode = word >> 16, word & 0xFFFF
    body, data = data[8:size], data[size:]
    if obj == 2 and opcode == 0:
        length = struct.unpack_from("=I", body, 4)[0]
        print(body[8:8 + length - 1].decode())
    elif obj == 3:
        break
"""


def give_cookie(user: HostUser, xauthority: Path) -> Path:
    """The user's own copy of the display's cookie file, as their session has it."""
    cookie = user.home / ".Xauthority"
    shutil.copy(xauthority, cookie)
    os.chown(cookie, user.uid, user.gid)
    cookie.chmod(0o600)
    return cookie


def write_tone(path: Path, seconds: float = 1.0, rate: int = 44100) -> None:
    """A loud 440 Hz sine as a 16-bit mono WAV file."""
    import math
    import struct
    import wave

    frames = b"".join(
        struct.pack("<h", int(20000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


@contextlib.contextmanager
def recording(server: SoundServer, path: Path) -> Iterator[None]:
    """Record the test sink's monitor (what anything played on the server sounds like)."""
    with path.open("wb") as out:
        process = subprocess.Popen(
            ["parec", f"--device={TEST_SINK}.monitor", "--format=s16le", "--channels=1",
             "--rate=44100", "--raw"],
            env=server.client_env(), stdout=out, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            yield
            time.sleep(0.3)
        finally:
            process.terminate()
            process.wait(timeout=10)


def peak_level(raw_s16le: bytes) -> int:
    import array

    samples = array.array("h")
    samples.frombytes(raw_s16le[: len(raw_s16le) // 2 * 2])
    return max((abs(s) for s in samples), default=0)


@contextlib.contextmanager
def x_client(server: XServer) -> Iterator[Any]:
    """A trusted client of the session's, as the user's own programs are: python-xlib with the
    session's cookie (which it reads from the environment), its extension tables its own (a
    test may speak to two servers, whose extensions sit at other codes)."""
    from Xlib.display import Display

    from sandboxapp.host.xconnection import own_tables

    saved = os.environ.get("XAUTHORITY")
    os.environ["XAUTHORITY"] = str(server.xauthority)
    try:
        display = own_tables(Display, server.display)
    finally:
        if saved is None:
            del os.environ["XAUTHORITY"]
        else:
            os.environ["XAUTHORITY"] = saved
    try:
        yield display
    finally:
        display.close()


def screenshot(server: XServer, path: Path) -> tuple[int, int, int]:
    """Save the whole screen as a PNG; (width, height, number of distinct colours)."""
    import struct
    import zlib

    from Xlib import X

    with x_client(server) as display:
        root = display.screen().root
        geometry = root.get_geometry()
        width, height = geometry.width, geometry.height
        raw = root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF).data
    rows = []
    colours: set[bytes] = set()
    for y in range(height):
        line = raw[y * width * 4:(y + 1) * width * 4]
        # ZPixmap at depth 24 is BGRX; PNG wants RGB.
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = line[2::4], line[1::4], line[0::4]
        if y % 8 == 0:
            colours.update(bytes(rgb[i:i + 3]) for i in range(0, len(rgb), 24))
        rows.append(b"\0" + bytes(rgb))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
           + chunk(b"IEND", b""))
    path.write_bytes(png)
    return width, height, len(colours)


@dataclass
class ServerEvent:
    facility: str  # "module", "client", "sink_input", "source_output"
    kind: str  # "new", "change", "remove"
    index: int
    name: str = ""  # a module's name, where it could still be read
    properties: dict[str, str] | None = None  # a client's or stream's, where it could be read


class ServerWatch:
    """Every module, client and stream the sound server creates or changes while it runs, as a
    pulsectl client of the user's sees them (read at once: a short-lived one may be gone)."""

    def __init__(self, server: SoundServer) -> None:
        self.server = server
        self.events: list[ServerEvent] = []
        self.stopping = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="server watch")

    def __enter__(self) -> ServerWatch:
        self.thread.start()
        if not self.ready.wait(15):
            raise HarnessError("the sound server's events could not be watched")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join(timeout=15)

    def _watch(self) -> None:
        import pulsectl

        with self.server.client() as pulse:
            seen: list[Any] = []
            pulse.event_mask_set("module", "client", "sink_input", "source_output")
            pulse.event_callback_set(seen.append)
            self.ready.set()
            while not self.stopping:
                pulse.event_listen(timeout=0.2)
                for event in seen:
                    self.events.append(self._read(pulse, pulsectl, event))
                seen.clear()

    @staticmethod
    def _read(pulse: Any, pulsectl: Any, event: Any) -> ServerEvent:
        # pulsectl's enum values compare equal to their names.
        facility = next(name for name in ("module", "client", "sink_input", "source_output")
                        if event.facility == name)
        kind = next(name for name in ("new", "change", "remove") if event.t == name)
        index = int(event.index)
        found = ServerEvent(facility, kind, index)
        if kind == "remove":
            return found
        lookup = {"module": pulse.module_info, "client": pulse.client_info,
                  "sink_input": pulse.sink_input_info,
                  "source_output": pulse.source_output_info}[facility]
        with contextlib.suppress(pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            info = lookup(index)
            found.name = str(getattr(info, "name", "") or "")
            found.properties = dict(getattr(info, "proplist", {}) or {})
        return found

    def modules_loaded(self) -> list[ServerEvent]:
        return [event for event in self.events if event.facility == "module"
                and event.kind == "new"]

    def properties_seen(self) -> list[dict[str, str]]:
        return [event.properties for event in self.events
                if event.facility != "module" and event.properties is not None]
