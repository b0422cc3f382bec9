"""Helpers for launch tests: profile variants on the shared test image, and the real tools a
user would look with (xhost, and a pulsectl client of the sound server)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandboxapp.fs.util import mounts_under
from tests.harness import SoundServer, XServer
from tests.integration.conftest import REPO

NAME = "sandboxapp-test"
IMAGE_SECTION = ('[image]\nsuite = "bookworm"\n'
                 'packages = ["x11-utils", "x11-apps", "xdotool", "xclip", "pulseaudio-utils", '
                 '"python3-minimal", "dbus-daemon", "libglib2.0-bin"]\n')


def write_variant(directory: Path, command: Sequence[str], sandbox: str = "",
                  name: str = NAME) -> Path:
    """A profile on the test image with another command or [sandbox] section."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(f"command = {json.dumps(list(command))}\n{IMAGE_SECTION}[sandbox]\n{sandbox}")
    return path


FULL_SANDBOX = 'x11 = true\npulseaudio = true\nnetwork = "none"\npersist = ["/root/data"]\n'
# The same, with the display's trusted grant (an authorization of its own on the user's display).
TRUSTED_SANDBOX = FULL_SANDBOX.replace("x11 = true", 'x11 = "trusted"')


@dataclass
class Session:
    """A desktop session's environment: display, sound server, data and run directories."""

    tmp: Path
    image_dir: Path
    xserver: XServer | None = None
    sound: SoundServer | None = None
    sudo_uid: int | None = None
    # The desktop's session manager (SESSION_MANAGER), where the session has one.
    session_manager: Path | None = None

    @property
    def data_home(self) -> Path:
        return self.tmp / "data"

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    @property
    def profiles(self) -> Path:
        return self.tmp / "config" / "sandboxapp" / "profiles"

    def persist_dir(self, container_path: str = "/root/data", name: str = NAME) -> Path:
        return self.data_home / "sandboxapp" / name / container_path.lstrip("/")

    @property
    def downloads(self) -> Path:
        """The session's download directory (its user-dirs.dirs names it): a profile's
        downloads directory is made in it, never in /root/Downloads."""
        return self.tmp / "downloads"

    def _user_dirs(self) -> None:
        config = self.tmp / "config"
        config.mkdir(exist_ok=True)
        user_dirs = config / "user-dirs.dirs"
        if not user_dirs.exists():  # a test may have written one of its own
            user_dirs.write_text(f'XDG_DOWNLOAD_DIR="{self.downloads}"\n')
        # Read for the user it is theirs, as root reads it (without following symlinks).
        owner = self.sudo_uid if self.sudo_uid is not None else 0
        os.chown(user_dirs, owner, owner)

    def env(self) -> dict[str, str]:
        self._user_dirs()
        env = {"PATH": os.environ["PATH"], "HOME": "/root",
               "SANDBOXAPP_IMAGE_DIR": str(self.image_dir),
               "SANDBOXAPP_RUN_DIR": str(self.run_dir),
               "XDG_DATA_HOME": str(self.data_home),
               "XDG_CONFIG_HOME": str(self.tmp / "config"),
               "XDG_STATE_HOME": str(self.tmp / "state")}
        if self.xserver is not None:
            env.update(DISPLAY=self.xserver.display, XAUTHORITY=str(self.xserver.xauthority))
        if self.sound is not None:
            env["PULSE_SERVER"] = f"unix:{self.sound.socket}"
        if self.sudo_uid is not None:
            env.update(SUDO_UID=str(self.sudo_uid), SUDO_GID=str(self.sudo_uid))
        if self.session_manager is not None:
            env["SESSION_MANAGER"] = f"unix/:{self.session_manager}"
        return env

    def sandboxapp(self, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sandboxapp", *args],
                              env=self.env() if env is None else env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.sandboxapp("run", *args, timeout=timeout)

    def start(self, *args: str, own_group: bool = False) -> subprocess.Popen[str]:
        """own_group: the launch leads a process group of its own, as a terminal's foreground
        job does (a signal to the group reaches all of it, as Ctrl-C does)."""
        return subprocess.Popen([sys.executable, "-m", "sandboxapp", "run", *args],
                                env=self.env(), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                process_group=0 if own_group else None)

    @contextlib.contextmanager
    def running(self, profile: Path) -> Iterator[subprocess.Popen[str]]:
        """A launch of a waiting_command() profile, from its ready mark until the test lets it
        finish (it must then exit 0)."""
        launch = self.start(str(profile))
        try:
            wait_for_file(self.persist_dir() / "ready", launch)
            yield launch
            (self.persist_dir() / "go").touch()
            assert launch.wait(timeout=60) == 0, launch.stderr.read() if launch.stderr else ""
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()

    def start_ready(self, profile: Path) -> subprocess.Popen[str]:
        """Start a launch of a looping_command() profile and wait until its app is up."""
        launch = self.start(str(profile))
        wait_for_file(self.persist_dir() / "ready", launch)
        return launch

    def assert_nothing_left(self, grants_before: list[str], modules_before: list[str]) -> None:
        """No grant, socket, layer, mount or record outlived the launch."""
        assert self.x_grants() == grants_before
        assert self.socket_modules() == modules_before
        assert not (self.image_dir / ".layers" / NAME).exists()
        assert mounts_under(self.image_dir) == []
        assert not list(self.run_dir.glob("*.json"))
        assert not (self.run_dir / "sound" / NAME).exists()
        assert not (self.run_dir / "sound" / ".x11" / NAME).exists()
        assert sandbox_processes(image_uid(self)) == []

    def x_cookie(self) -> Path:
        """The sandbox's Xauthority file, in its X directory (no XDG_RUNTIME_DIR here)."""
        return self.run_dir / "sound" / ".x11" / NAME / "Xauthority"

    def x_client_with(self, cookie: Path) -> subprocess.CompletedProcess[str]:
        """A client of the user's display with only this cookie: the extensions it is
        offered (a trusted client is offered XTEST, an untrusted one not), or its refusal."""
        assert self.xserver is not None
        return subprocess.run(["xdpyinfo", "-queryExtensions"],
                              env={"PATH": "/usr/bin:/bin", "DISPLAY": self.xserver.display,
                                   "XAUTHORITY": str(cookie)},
                              capture_output=True, text=True, timeout=30, check=False)

    def x_grants(self) -> list[str]:
        assert self.xserver is not None
        out = subprocess.run(["xhost"], env=self.xserver.client_env(), capture_output=True,
                             text=True, check=True).stdout
        return [line.strip() for line in out.splitlines()[1:] if line.strip()]

    def socket_modules(self) -> list[tuple[int, str, str]]:
        assert self.sound is not None
        return [module for module in self.sound.modules()
                if module[1] == "module-native-protocol-unix"]


def wait_for_file(path: Path, process: subprocess.Popen[str] | None = None,
                  timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the launch ended early ({process.returncode}): "
                                 f"{process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def looping_command(trap: str) -> list[str]:
    """A command for the container: set the shell trap, mark /root/data/ready, loop forever."""
    return ["/bin/sh", "-c", f"{trap}; touch /root/data/ready; while true; do sleep 0.1; done"]


# A command for the container: do what `script` says, mark /root/data/ready, then wait until
# the test creates /root/data/go.
def waiting_command(script: str = "true") -> list[str]:
    return ["/bin/sh", "-c",
            f"{script} && touch /root/data/ready && "
            "while [ ! -e /root/data/go ]; do sleep 0.05; done"]


def sandbox_processes(base: int) -> list[str]:
    """Processes running as a UID of the image's block, that is, in one of its sandboxes
    (whatever mount namespace they are in), as "pid command"; zombies, which run nothing and
    wait for an init to reap them, do not count."""
    found = []
    for process in psutil.process_iter(["uids", "name", "status"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if base <= process.info["uids"].real < base + 0x10000:
                found.append(f"{process.pid} {process.info['name']}")
    return found


def wait_for_no_sandbox_processes(base: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := sandbox_processes(base)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def image_uid(session: Session, name: str = NAME) -> int:
    """The host UID the image's sandboxes run as (its block's first)."""
    return int(json.loads((session.image_dir / name / "image.json").read_text())["uid_base"])

