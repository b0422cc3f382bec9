"""A real unprivileged desktop user launches through `sandboxapp setup`'s sudo rule."""

from __future__ import annotations

import array
import contextlib
import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from sandboxapp.fs.util import mounts_under
from sandboxapp.host.wayland import ALLOWED_GLOBALS
from sandboxapp.paths import HELPER_PATH, SUDOERS_FILE, SYSTEM_PROFILE_DIR, USER_COMMAND
from tests.harness import (
    LIST_GLOBALS,
    HostUser,
    SoundServer,
    XServer,
    give_cookie,
    host_user,
    require_programs,
    sound_server,
    wayland_compositor,
)
from tests.integration.conftest import REPO, TEST_PROFILE
from tests.integration.faults import APP, PRECIOUS, Moment, kill_at_moments, recorded
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    Session,
    wait_for_file,
    wait_for_no_sandbox_processes,
    write_variant,
)
from tests.integration.terminal import PROBE, run_on_a_terminal


@dataclass
class DesktopUser(HostUser):
    @property
    def profiles(self) -> Path:
        return self.home / ".config" / "sandboxapp" / "profiles"

    @property
    def data(self) -> Path:
        return self.home / ".local" / "share" / "sandboxapp" / NAME / "root" / "data"


def _make_user(tag: str) -> Iterator[DesktopUser]:
    with host_user(f"sbx{tag}") as user:
        yield DesktopUser(user.name, user.uid, user.gid, user.home, user.runtime)


@pytest.fixture
def installed(test_image_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """`sandboxapp setup`, as an admin runs it; removed again afterwards."""
    require_programs("sudo", "visudo", "useradd")
    if SUDOERS_FILE.exists():
        pytest.fail(f"{SUDOERS_FILE} exists: sandboxapp is set up on this machine, and these "
                    "tests install and remove it; run them on a test machine")
    root_run = tmp_path / "root-run"
    env = {"PATH": os.environ["PATH"], "HOME": "/root",
           "SANDBOXAPP_IMAGE_DIR": str(test_image_dir), "SANDBOXAPP_RUN_DIR": str(root_run)}
    result = subprocess.run([sys.executable, "-m", "sandboxapp", "setup"], env=env, cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    try:
        yield root_run
    finally:
        subprocess.run([sys.executable, "-m", "sandboxapp", "setup", "--uninstall"], env=env,
                       cwd=REPO, capture_output=True, check=False)


def _group_member(tag: str, installed: Path, test_image_dir: Path) -> Iterator[DesktopUser]:
    # The store and run directories again: setup writes them into the helper anew.
    env = {"PATH": os.environ["PATH"], "HOME": "/root",
           "SANDBOXAPP_IMAGE_DIR": str(test_image_dir), "SANDBOXAPP_RUN_DIR": str(installed)}
    for user in _make_user(tag):
        result = subprocess.run([str(USER_COMMAND), "setup", "--add-user", user.name],
                                env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        yield user


@pytest.fixture
def member(installed: Path, test_image_dir: Path) -> Iterator[DesktopUser]:
    yield from _group_member("m", installed, test_image_dir)


@pytest.fixture
def second_member(installed: Path, test_image_dir: Path) -> Iterator[DesktopUser]:
    yield from _group_member("n", installed, test_image_dir)


@pytest.fixture
def outsider(installed: Path, tmp_path: Path) -> Iterator[DesktopUser]:
    yield from _make_user("o")


@pytest.fixture
def user_x(member: DesktopUser, xserver: XServer) -> Path:
    """The user's own cookie file for the display, as their session has it."""
    return give_cookie(member, xserver.xauthority)


@pytest.fixture
def user_sound(member: DesktopUser) -> Iterator[SoundServer]:
    with sound_server(member.runtime, run_as=(member.uid, member.gid)) as server:
        yield server


def as_user(user: DesktopUser, argv: list[str], env: dict[str, str] | None = None,
            background: bool = False) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(user.home),
                "USER": user.name, "XDG_RUNTIME_DIR": str(user.runtime), **(env or {})}
    command = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
               "--", *argv]
    if background:
        # A process group of its own, as a terminal's foreground job has (sudo and the helper
        # in it, as they are when the user presses Ctrl-C).
        return subprocess.Popen(command, env=full_env, cwd=user.home, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, process_group=0)
    # Input stays open until the command ends: the helper takes its end as "stop".
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=full_env, cwd=user.home, stdin=subprocess.PIPE,
                                   stdout=out, stderr=err, text=True)
        try:
            process.wait(timeout=120)
        finally:
            assert process.stdin is not None
            process.stdin.close()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def session_env(xserver: XServer, cookie: Path, sound: SoundServer) -> dict[str, str]:
    return {"DISPLAY": xserver.display, "XAUTHORITY": str(cookie),
            "PULSE_SERVER": f"unix:{sound.socket}"}


def user_profile(user: DesktopUser, command: list[str], sandbox: str = FULL_SANDBOX) -> Path:
    user.profiles.mkdir(parents=True, exist_ok=True)
    path = write_variant(user.profiles, command, sandbox)
    for directory in (user.home / ".config", user.home / ".config" / "sandboxapp",
                      user.profiles, path):
        os.chown(directory, user.uid, user.gid)
    return path


def _start_waiting(user: DesktopUser, env: dict[str, str], script: str, *,
                   as_arguments: bool = False) -> subprocess.Popen[str]:
    """The user's launch of a shell that runs script, marks data/ready and waits for
    data/go; returned once it is ready. as_arguments: the profile's command is a bare shell,
    and the script comes after `--` (so that a second run with other words joins it)."""
    full = (f"{script}; touch /root/data/ready; "
            "while [ ! -e /root/data/go ]; do sleep 0.05; done")
    user_profile(user, ["/bin/sh"] if as_arguments else ["/bin/sh", "-c", full])
    words = ["--", "-c", full] if as_arguments else []
    launch = as_user(user, [str(USER_COMMAND), "run", NAME, *words], env, background=True)
    assert isinstance(launch, subprocess.Popen)
    try:
        wait_for_file(user.data / "ready", launch)
    except BaseException:
        launch.kill()
        raise
    return launch


def test_adding_a_user_from_a_plain_shell_keeps_the_store_the_first_setup_fixed(
        installed: Path, test_image_dir: Path) -> None:
    """The first setup fixed a store and run directory of its own in the helper; an admin
    adds a user later from a shell without them: the helper keeps both. A setup that names
    another store is refused, naming both, and changes nothing."""
    helper_before = Path(HELPER_PATH).read_text()
    assert str(test_image_dir) in helper_before and str(installed) in helper_before
    plain = {"PATH": os.environ["PATH"], "HOME": "/root"}
    for user in _make_user("k"):
        added = subprocess.run([str(USER_COMMAND), "setup", "--add-user", user.name],
                               env=plain, capture_output=True, text=True, check=False)
        assert added.returncode == 0, added.stderr
        assert user.name in grp.getgrnam("sandboxapp").gr_mem
        assert Path(HELPER_PATH).read_text() == helper_before
        elsewhere = "/var/tmp/sandboxapp-elsewhere"
        refused = subprocess.run([str(USER_COMMAND), "setup", "--add-user", "root"],
                                 env={**plain, "SANDBOXAPP_IMAGE_DIR": elsewhere},
                                 capture_output=True, text=True, check=False)
        assert refused.returncode == 2, refused.stderr
        said = [line for line in refused.stderr.splitlines() if line.startswith("sandboxapp:")]
        assert len(said) == 1 and elsewhere in said[0] and str(test_image_dir) in said[0], said
        assert "Traceback" not in refused.stderr
        assert Path(HELPER_PATH).read_text() == helper_before
        assert "root" not in grp.getgrnam("sandboxapp").gr_mem


def test_sudo_run_keeps_the_users_data_in_their_home_never_in_roots(
        member: DesktopUser, test_image_dir: Path, tmp_path: Path) -> None:
    """`sudo sandboxapp run` as sudo leaves it (HOME=/root, no XDG_*): root acts for the user
    who called sudo, whose profiles, data and logs live in their own home; nothing of theirs
    appears in root's."""
    user_profile(member, ["/bin/sh", "-c", "echo mine > /root/data/file"],
                 'network = "none"\npersist = ["/root/data"]\n')
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "LOGNAME": "root", "USER": "root",
           "SUDO_UID": str(member.uid), "SUDO_GID": str(member.gid), "SUDO_USER": member.name,
           "SANDBOXAPP_IMAGE_DIR": str(test_image_dir),
           "SANDBOXAPP_RUN_DIR": str(tmp_path / "run")}
    result = subprocess.run([sys.executable, "-m", "sandboxapp", "run", NAME], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    made_for_them_in_roots = subprocess.run(
        ["find", "/root", "-xdev", "-uid", str(member.uid)], capture_output=True, text=True,
        check=False).stdout.split()
    assert made_for_them_in_roots == []
    assert result.returncode == 0, result.stderr
    for path in (member.data / "file", member.data):
        assert (path.stat().st_uid, path.stat().st_gid) == (member.uid, member.gid)
    logs = member.home / ".local" / "state" / "sandboxapp" / NAME
    assert [log.stat().st_uid for log in logs.iterdir()] == [member.uid]


def test_a_user_resets_what_a_stateful_profile_kept_for_them_through_the_helper(
        member: DesktopUser, test_image_dir: Path) -> None:
    """A desktop user's kept changes are root's files: `sandboxapp reset` has the helper drop
    them, theirs only, and the next run starts from the pristine image."""
    user_profile(member, ["/bin/sh", "-c", "cat /var/tmp/mark 2>/dev/null || echo pristine; "
                                           "echo run >> /var/tmp/mark"],
                 'stateless = false\nnetwork = "none"\npersist = ["/root/data"]\n')
    kept = test_image_dir / ".state" / NAME / str(member.uid)
    subprocess.run(["rm", "-rf", str(kept)], check=True)  # an earlier run's

    def shown() -> list[str]:
        result = as_user(member, [str(USER_COMMAND), "run", NAME])
        assert isinstance(result, subprocess.CompletedProcess)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert shown() == ["pristine"]
    other = test_image_dir / ".state" / NAME / "4321"  # another user's kept changes
    made = not other.exists()
    other.mkdir(mode=0o700, exist_ok=True)
    assert shown() == ["run"]
    reset = as_user(member, [str(USER_COMMAND), "reset", NAME])
    assert isinstance(reset, subprocess.CompletedProcess)
    assert reset.returncode == 0, reset.stderr
    assert "dropped what sandboxapp-test kept for you" in reset.stdout, reset.stdout
    assert not kept.exists() and other.is_dir()
    assert shown() == ["pristine"]
    again = as_user(member, [str(USER_COMMAND), "reset", NAME])  # what the last run kept
    assert isinstance(again, subprocess.CompletedProcess) and again.returncode == 0
    if made:
        other.rmdir()


def test_a_member_replaces_the_profiles_program_with_command(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path,
) -> None:
    user_profile(member, ["/bin/echo", "from-the-profile"])
    env = session_env(xserver, user_x, user_sound)
    result = as_user(member, [str(USER_COMMAND), "run", "--command", "/bin/sh", NAME, "--",
                              "-c", "echo replaced; xdpyinfo | head -1"], env)
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "replaced"
    assert result.stdout.splitlines()[1].startswith("name of display:")


def test_a_members_downloads_land_in_their_download_directory_through_the_helper(
    member: DesktopUser, installed: Path,
) -> None:
    """The helper binds the downloads directory the request names only where it is the
    profile's; what the sandbox saves there is the member's, beside nothing else of theirs."""
    (member.home / "Downloads").mkdir()
    os.chown(member.home / "Downloads", member.uid, member.gid)
    (member.home / "Downloads" / "taxes.ods").write_text("private")
    user_profile(member, ["/bin/sh", "-c", "ls -A /root/Downloads; echo saved > "
                                           "/root/Downloads/page.html"],
                 'downloads = "Test (sandbox)"\n')
    result = as_user(member, [str(USER_COMMAND), "run", NAME])
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    saved = member.home / "Downloads" / "Test (sandbox)" / "page.html"
    assert saved.read_text() == "saved\n"
    assert (saved.stat().st_uid, saved.parent.stat().st_uid) == (member.uid, member.uid)


def test_a_member_hands_their_file_through_the_helper_and_never_one_they_cannot_read(
    member: DesktopUser, installed: Path,
) -> None:
    """The launcher opens a file named on the command line as the member, and the helper
    binds that open file read-only; /etc/shadow, or a symlink of theirs to it, never gets
    that far; a request whose files and descriptors disagree is refused."""
    letter = member.home / "letter.txt"
    letter.write_text("from the member\n")
    os.chown(letter, member.uid, member.gid)
    os.chmod(letter, 0o600)
    (member.home / "link").symlink_to("/etc/shadow")
    user_profile(member, ["/bin/sh", "-c", 'cat "$0"; { echo x >> "$0"; } 2>/dev/null || '
                                           "echo read-only"], "")
    result = as_user(member, [str(USER_COMMAND), "run", NAME, "--", str(letter)])
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.returncode, result.stdout) == (0, "from the member\nread-only\n"), \
        result.stderr
    for forbidden, why in (("/etc/shadow", "Permission denied"),
                           (str(member.home / "link"), "it is a symlink")):
        refused = as_user(member, [str(USER_COMMAND), "run", NAME, "--", forbidden])
        assert isinstance(refused, subprocess.CompletedProcess)
        assert refused.returncode == 2, refused.stderr
        assert why in refused.stderr
    request = helper_request("launch", member.profiles / f"{NAME}.toml",
                             member.home / ".local" / "share", NAME)[-1]
    forged = json.dumps({**json.loads(request), "files": ["shadow"]})
    sent = _pending(member, b"request " + forged.encode())
    assert sent.returncode == 2 and "names 1 files and comes with 0" in sent.stderr


def etc_state() -> list[tuple[str, float]]:
    return sorted((entry.name, entry.stat(follow_symlinks=False).st_mtime)
                  for entry in os.scandir("/etc"))


def _cmdline(process: psutil.Process) -> list[str]:
    """A process's command line; none for one that ended meanwhile (nspawn's short-lived
    children are zombies for a moment, until it reaps them)."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_ctrl_c_to_a_users_launch_asks_the_app_to_quit_before_any_signal(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path,
) -> None:
    """The terminal's SIGINT reaches the whole group, the root helper too: the helper leaves
    the stop to the launcher, which asks the app to quit through the session manager."""
    tool = Path(__file__).parent / "sandbox_tools" / "xsmpapp.py"
    member.data.mkdir(parents=True, exist_ok=True)
    shutil.copy(tool, member.data / tool.name)
    subprocess.run(["chown", "-R", f"{member.uid}:{member.gid}", str(member.home / ".local")],
                   check=True)
    user_profile(member, ["python3", f"/root/data/{tool.name}", "obey"])
    launch = as_user(member, [str(USER_COMMAND), "run", NAME],
                     session_env(xserver, user_x, user_sound), background=True)
    assert isinstance(launch, subprocess.Popen)
    try:
        wait_for_file(member.data / "ready", launch)
        os.killpg(launch.pid, signal.SIGINT)
        assert launch.wait(timeout=60) == 130, launch.stderr.read() if launch.stderr else ""
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert (member.data / "told-to-die").exists()
    assert not (member.data / "termed").exists()


def test_a_group_member_launches_an_x_profile_through_the_rule(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path, test_image_dir: Path,
) -> None:
    launch = _start_waiting(member, session_env(xserver, user_x, user_sound),
                            "xdpyinfo | head -1; pactl info | head -1; echo mine > /root/data/file")
    try:
        uid = json.loads((test_image_dir / NAME / "image.json").read_text())["uid_base"]
        hosts = subprocess.run(["xhost"], env=xserver.client_env(), capture_output=True,
                               text=True, check=True).stdout
        # No host-list entry: the sandbox has an X server of its own, the user's process, its
        # cookie in the user's runtime directory, the user's file.
        assert f"SI:localuser:#{uid}" not in hosts
        nested = [p for p in psutil.process_iter(["name", "uids"])
                  if p.info["name"] == "Xephyr" and p.info["uids"].real == member.uid]
        assert len(nested) == 1
        cookie = member.runtime / "sandboxapp" / ".x11" / NAME / "Xauthority"
        assert (cookie.stat().st_uid, cookie.stat().st_mode & 0o777) == (member.uid, 0o600)
        # The grant came from the user's own connection: the launcher runs as the user, and
        # the root helper was given no display credentials at all.
        launcher = psutil.Process(launch.pid)
        assert launcher.uids().real == member.uid
        helpers = [p for p in launcher.children(recursive=True)
                   if HELPER_PATH in _cmdline(p) and p.name() != "sudo"]
        assert helpers, "the root side did not go through the helper"
        assert helpers[0].uids().effective == 0
        helper_env = helpers[0].environ()
        assert "XAUTHORITY" not in helper_env and "DISPLAY" not in helper_env
        assert helper_env["SUDO_UID"] == str(member.uid)
        (member.data / "go").touch()
        out, err = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, err
    # The window's icon is read with the installed copy's own modules (Pillow among them).
    assert "the window's icon was not set" not in err, err
    shown = out.splitlines()[0]
    assert shown.startswith("name of display:    :") and shown != (
        f"name of display:    {xserver.display}")
    assert out.splitlines()[1].startswith("Server String: unix:/run/sandboxapp/pulse/native")
    for path in (member.data / "file", member.data):
        assert (path.stat().st_uid, path.stat().st_gid) == (member.uid, member.gid)
    hosts = subprocess.run(["xhost"], env=xserver.client_env(), capture_output=True, text=True,
                           check=True).stdout
    assert f"SI:localuser:#{uid}" not in hosts
    assert not cookie.parent.exists()
    assert mounts_under(test_image_dir) == []
    log = (test_image_dir / ".logs" / "privileged.log").read_text()
    assert f"uid={member.uid} profile={NAME}" in log


@pytest.mark.parametrize("kind", ["mutter", "labwc-trixie"])
def test_a_members_wayland_profile_reaches_their_compositor_alone_through_the_rule(
    member: DesktopUser, user_x: Path, xserver: XServer, tmp_path: Path, kind: str,
) -> None:
    """GNOME's compositor, the member's own: the sandbox connects to it through the helper's
    idmapped bind of that one socket, sees no other file of the runtime directory, and has no
    X display. labwc's: the same, through a socket the member's launcher registered with it
    as the sandbox's, which goes with the launch."""
    with wayland_compositor(tmp_path, kind, member) as compositor:
        member.data.mkdir(parents=True)
        (member.data / "globals.py").write_text(LIST_GLOBALS)
        for path in [*reversed(member.data.relative_to(member.home).parents), member.data]:
            os.chown(member.home / path, member.uid, member.gid)
        env = {"DISPLAY": xserver.display, "XAUTHORITY": str(user_x),
               "WAYLAND_DISPLAY": compositor.socket.name}
        profile = user_profile(member, ["/bin/sh", "-c",
                                        "python3 /root/data/globals.py > /root/data/globals; "
                                        "env > /root/data/env; ls -A $(dirname "
                                        "$WAYLAND_DISPLAY) > /root/data/beside"],
                               FULL_SANDBOX.replace("pulseaudio = true", "wayland = true"))
        (member.runtime / "secret").write_text("the user's")
        result = as_user(member, [str(USER_COMMAND), "run", str(profile)], env)
        assert result.returncode == 0, result.stderr
        assert not (member.runtime / "sandboxapp" / ".wayland").exists() or not any(
            (member.runtime / "sandboxapp" / ".wayland").iterdir())
    offered = set((member.data / "globals").read_text().split())
    assert {"wl_compositor", "xdg_wm_base", "wl_seat"} <= offered, offered
    assert offered <= ALLOWED_GLOBALS.keys(), offered - ALLOWED_GLOBALS.keys()
    inside = dict(line.split("=", 1) for line in (member.data / "env").read_text().splitlines()
                  if "=" in line)
    assert inside["WAYLAND_DISPLAY"] == "/run/sandboxapp/wayland-0"
    assert "DISPLAY" not in inside and "XAUTHORITY" not in inside
    # Beside the socket: nothing of the user's runtime directory.
    assert "secret" not in (member.data / "beside").read_text()
    assert not [p for p in psutil.process_iter(["name", "uids"])
                if p.info["name"] == "Xephyr" and p.info["uids"].real == member.uid]


def test_launch_records_are_private_and_ps_shows_the_users_own_sandbox(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path, test_image_dir: Path,
) -> None:
    launch = _start_waiting(member, session_env(xserver, user_x, user_sound), "true")
    try:
        # The root side's record names the profile file and the user: root's alone.
        # The user's launches keep their root side's records in a directory of their own.
        [record] = (installed / f"user-{member.uid}").glob("*.json")
        assert not list(installed.glob("*.json"))
        assert record.stat().st_mode & 0o777 == 0o600
        peek = as_user(member, ["cat", str(record)])
        assert isinstance(peek, subprocess.CompletedProcess)
        assert peek.returncode != 0 and "Permission denied" in peek.stderr
        [own] = (member.runtime / "sandboxapp").glob("*.json")
        assert (own.stat().st_mode & 0o777, own.stat().st_uid) == (0o600, member.uid)
        # `ps` still finds the user's container, below the user's own launcher.
        ps = as_user(member, [str(USER_COMMAND), "ps", "--json"])
        assert isinstance(ps, subprocess.CompletedProcess)
        assert ps.returncode == 0, ps.stderr
        [sandbox] = json.loads(ps.stdout)
        uid = json.loads((test_image_dir / NAME / "image.json").read_text())["uid_base"]
        assert (sandbox["profile"], sandbox["launcher_pid"], sandbox["host_uid"]) == (
            NAME, launch.pid, uid)
        assert isinstance(sandbox["container_pid"], int) and sandbox["memory_bytes"] > 0
        (member.data / "go").touch()
        _, err = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, err


def test_a_profile_path_with_a_newline_cannot_forge_a_line_of_the_helpers_log(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path,
) -> None:
    forged = "2026-01-01T00:00:00+00:00 uid=0 profile=firefox exit=0"
    directory = member.home / f"x\n{forged}"
    directory.mkdir()
    os.chown(directory, member.uid, member.gid)
    path = write_variant(directory, ["true"])
    os.chown(path, member.uid, member.gid)
    log_file = test_image_dir / ".logs" / "privileged.log"
    before = log_file.stat().st_size if log_file.exists() else 0
    result = as_user(member, helper_request("launch", path, member.home / ".local" / "share",
                                            NAME))
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0, result.stderr
    with log_file.open(encoding="utf-8") as stream:
        stream.seek(before)
        log = stream.read().splitlines()
    assert not [line for line in log if line.startswith(forged)]
    # The path is in the launch's line, its newline written as an escape.
    assert [line for line in log if f"file={member.home}/x\\n{forged}/" in line]


def _refused(result: subprocess.CompletedProcess[str] | subprocess.Popen[str],
             *fragments: str) -> None:
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode in (2, 125), result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sandboxapp:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def test_a_profile_binding_etc_shadow_is_refused(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path,
) -> None:
    before = etc_state()
    user_profile(member, ["cat", "/mnt/shadow"],
                 FULL_SANDBOX + 'bind_ro = ["/etc/shadow:/mnt/shadow"]\n')
    result = as_user(member, [str(USER_COMMAND), "run", NAME],
                     session_env(xserver, user_x, user_sound))
    _refused(result, "sandbox.bind_ro", "/etc/shadow")
    assert "root:" not in result.stdout
    assert etc_state() == before
    assert mounts_under(test_image_dir) == []


def test_a_persist_directory_that_is_a_symlink_to_etc_is_refused(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path, installed: Path,
) -> None:
    before = etc_state()
    user_profile(member, ["ls", "/root/data"])
    member.data.parent.mkdir(parents=True)
    subprocess.run(["chown", "-R", f"{member.uid}:{member.gid}", str(member.home / ".local")],
                   check=True)
    os.symlink("/etc", member.data)
    os.lchown(member.data, member.uid, member.gid)
    # Through the launcher (its own check) ...
    result = as_user(member, [str(USER_COMMAND), "run", NAME],
                     session_env(xserver, user_x, user_sound))
    _refused(result, "symlink")
    # ... and straight to the helper, as a user bypassing the launcher could.
    direct = as_user(member, helper_request(
        "launch", member.profiles / f"{NAME}.toml", member.home / ".local" / "share", NAME,
        {"display": {"display": int(xserver.display.lstrip(":")),
                     "x11_dir": str(member.home / "x11")}}))
    _refused(direct, "persistent directory", "symlink")
    assert "passwd" not in direct.stdout
    assert etc_state() == before
    assert mounts_under(test_image_dir) == []
    assert not list(installed.rglob("*.json"))


def test_a_data_directory_swapped_for_a_symlink_meanwhile_never_exposes_etc(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path,
) -> None:
    """Swap the persistent directory with a symlink to /etc as fast as possible while the
    helper checks and binds it: each launch must refuse or bind the real directory."""
    before = etc_state()
    user_profile(member, ["/bin/sh", "-c", "if [ -e /root/data/passwd ]; then echo LEAK; fi"],
                 'persist = ["/root/data"]\n')
    member.data.mkdir(parents=True)
    subprocess.run(["chown", "-R", f"{member.uid}:{member.gid}", str(member.home / ".local")],
                   check=True)
    real = member.data.with_name("data-real")
    os.rename(member.data, real)
    link = member.data.with_name("data-link")
    os.symlink("/etc", link)
    os.lchown(link, member.uid, member.gid)
    stop = threading.Event()

    def swap() -> None:
        # Flip data between the real directory and the symlink (rename is atomic).
        while not stop.is_set():
            os.rename(real, member.data)
            os.rename(member.data, real)
            os.rename(link, member.data)
            os.rename(member.data, link)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes = []
    try:
        for _ in range(15):
            direct = as_user(member, helper_request(
                "launch", member.profiles / f"{NAME}.toml", member.home / ".local" / "share",
                NAME))
            assert isinstance(direct, subprocess.CompletedProcess)
            assert "LEAK" not in direct.stdout
            assert "Traceback" not in direct.stderr
            outcomes.append(direct.returncode)
            assert direct.returncode in (0, 125), direct.stderr
    finally:
        stop.set()
        swapper.join()
    assert set(outcomes) <= {0, 125}, outcomes
    print(f"swap race: {outcomes.count(0)} launches bound the real directory, "
          f"{outcomes.count(125)} were refused")
    assert etc_state() == before
    assert mounts_under(test_image_dir) == []


@pytest.fixture
def trusted_test_profile() -> Iterator[Path]:
    """The test profile in the system profile directory, where the helper trusts it."""
    path = SYSTEM_PROFILE_DIR / f"{NAME}.toml"
    if path.exists():
        pytest.fail(f"{path} exists: these tests install and remove it")
    made = [d for d in (SYSTEM_PROFILE_DIR.parent, SYSTEM_PROFILE_DIR) if not d.exists()]
    SYSTEM_PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEST_PROFILE, path)
    try:
        yield path
    finally:
        path.unlink()
        for directory in reversed(made):
            directory.rmdir()


def test_a_user_may_not_have_an_image_updated_again_within_ten_minutes(
    member: DesktopUser, trusted_test_profile: Path, test_image_dir: Path,
) -> None:
    meta_path = test_image_dir / NAME / "image.json"
    meta = json.loads(meta_path.read_text())
    # As just after an update, a minute ago (the metadata is the only clock sandboxapp reads).
    meta["updated_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    meta_path.write_text(json.dumps(meta))
    before = meta_path.read_text()
    request = helper_request("update", trusted_test_profile, Path("/nonexistent"), NAME)
    for _ in range(3):
        refused = as_user(member, request)
        _refused(refused, "got its packages", "once in 10 minutes")
        assert "sudo sandboxapp image update" in refused.stderr
    assert meta_path.read_text() == before
    # Root asks: the update is made at once.
    env = {"PATH": os.environ["PATH"], "HOME": "/root",
           "SANDBOXAPP_IMAGE_DIR": str(test_image_dir)}
    update = subprocess.run([sys.executable, "-m", "sandboxapp", "image", "update",
                             str(trusted_test_profile)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600, check=False)
    assert update.returncode == 0, update.stderr
    assert json.loads(meta_path.read_text())["updated_at"] > meta["updated_at"]


def test_profile_names_with_dot_dot_are_refused(member: DesktopUser) -> None:
    result = as_user(member, helper_request("launch", Path("/etc/x.toml"), Path("/tmp"),
                                            "../../etc/x"))
    _refused(result, "invalid profile name")
    result = as_user(member, helper_request(
        "launch", Path(f"/etc/sandboxapp/../shadow/{NAME}.toml"), Path("/tmp"), NAME))
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 2
    assert "'..'" in result.stderr
    result = as_user(member, [str(USER_COMMAND), "run", "--dry-run", "..%2Fetc"])
    _refused(result, "invalid profile name")


def test_the_helper_will_not_read_a_file_that_is_not_the_users(member: DesktopUser) -> None:
    """A valid profile that is root's alone, in a directory the user may pass: the helper,
    root, refuses it; the same file made the user's gets past the read."""
    directory = Path(tempfile.mkdtemp(prefix="sandboxapp-secret-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        secret = directory / "secret.toml"
        secret.write_text('command = ["true"]\n')
        secret.chmod(0o600)
        request = helper_request("launch", secret, Path("/tmp"), "secret")
        _refused(as_user(member, request), f"refusing to use {secret}", "belongs to UID 0")
        os.chown(secret, member.uid, member.gid)
        readable = as_user(member, request)
        assert isinstance(readable, subprocess.CompletedProcess)
        assert f"refusing to use {secret}" not in readable.stderr, readable.stderr
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_user_outside_the_group_is_refused_with_the_hint(outsider: DesktopUser) -> None:
    result = as_user(outsider, [str(USER_COMMAND), "run", "xeyes"], {"DISPLAY": ":0"})
    _refused(result, "you are not in the sandboxapp group")
    assert f"hint: run: sudo sandboxapp setup --add-user {outsider.name}" in result.stderr
    # Going around the launcher does not help: sudo itself refuses.
    direct = as_user(outsider, helper_request("launch", Path("/etc/x.toml"), Path("/tmp"),
                                              "xeyes"))
    assert isinstance(direct, subprocess.CompletedProcess)
    assert direct.returncode == 1
    assert "password is required" in direct.stderr


def test_a_second_launch_by_the_user_joins_through_the_helper(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path,
) -> None:
    env = session_env(xserver, user_x, user_sound)
    first = _start_waiting(member, env, "readlink /proc/self/ns/pid > /root/data/ns",
                           as_arguments=True)
    try:
        joined = as_user(member, [str(USER_COMMAND), "run", NAME, "--", "-c",
                                  "readlink /proc/self/ns/pid; touch /root/data/go"], env)
        assert isinstance(joined, subprocess.CompletedProcess)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.strip() == (member.data / "ns").read_text().strip()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert mounts_under(test_image_dir) == []




def test_a_file_named_to_a_running_sandbox_is_handed_to_it_through_the_helper(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
) -> None:
    """A menu entry clicked with a file while the program runs: the file is handed to the
    running sandbox first (the helper binds it as a launch's), and the joined command gets
    its path there."""
    letter = member.home / "letter.txt"
    letter.write_text("for the running one\n")
    os.chown(letter, member.uid, member.gid)
    os.chmod(letter, 0o600)
    env = session_env(xserver, user_x, user_sound)
    first = _start_waiting(member, env, "true", as_arguments=True)
    try:
        joined = as_user(member, [str(USER_COMMAND), "run", NAME, "--", "-c",
                                  'echo "$0"; cat "$0"; touch /root/data/go', str(letter)], env)
        assert isinstance(joined, subprocess.CompletedProcess)
        assert joined.returncode == 0, joined.stderr
        path, text = joined.stdout.splitlines()
        assert path.startswith("/run/sandboxapp/files/") and path.endswith("/letter.txt")
        assert text == "for the running one"
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()


def helper_request(action: str, profile_file: Path, data_home: Path, profile: str,
                   grants: dict[str, object] | None = None) -> list[str]:
    """The privileged helper called straight through sudo with a request, as a user going
    around the launcher could."""
    return ["sudo", "-n", HELPER_PATH, json.dumps({
        "action": action, "profile": profile, "profile_file": str(profile_file),
        "data_home": str(data_home), "grants": grants or {}})]


def _pending(user: DesktopUser, *messages: bytes, fd: int | None = None,
             stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """The helper started ahead of its request, as the launcher starts it, then given these
    messages (the first with fd beside it) on its control channel, which then ends; or with
    stdin as its input instead."""
    command = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--",
               "sudo", "-n", HELPER_PATH, "pending"]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with mine:
        with theirs:
            process = subprocess.Popen(
                command, env={"PATH": "/usr/bin:/bin", "HOME": str(user.home)},
                stdin=theirs.fileno() if stdin is None else stdin, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        for number, message in enumerate(messages):
            ancillary = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                         if fd is not None and number == 0 else [])
            with contextlib.suppress(OSError):
                mine.sendmsg([message], ancillary)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_a_helper_started_ahead_checks_its_request_like_its_arguments(
        member: DesktopUser) -> None:
    # No request: the launcher gave up; the helper leaves, saying and doing nothing.
    result = _pending(member)
    assert (result.returncode, result.stderr) == (125, "")
    # Not a request, or a request to wait again: refused.
    for request in (b'{"launch": 1}', b'"pending"', b"[1, 2]"):
        _refused(_pending(member, b"request " + request),
                 "the request to the privileged helper is malformed")
    # Not a message of the channel, a gate opened before any request, a descriptor beside
    # a word that carries none, or beside a request that names no file, an input that is not
    # a channel: refused too.
    request = helper_request("launch", member.profiles / f"{NAME}.toml",
                             member.home / ".local" / "share", NAME)[-1].encode()
    for messages, fd, why in (((b"launch xeyes",), None, "unknown word"),
                              ((b"request \xff",), None, "not UTF-8"),
                              ((b"open",), None, "it came as 'open'"),
                              ((b"open",), 1, "carries no file descriptors"),
                              ((b"request " + request,), 1, "names 0 files and comes with 1")):
        _refused(_pending(member, *messages, fd=fd), "malformed", why)
    read_end, write_end = os.pipe()
    os.write(write_end, b"request {}\n")
    os.close(write_end)
    _refused(_pending(member, stdin=read_end), "malformed", "not a socket")
    os.close(read_end)
    # The request gets the same checks as an argument does.
    result = _pending(member, b"request " + helper_request(
        "launch", Path("/etc/x.toml"), Path("/tmp"), "../../etc/x")[-1].encode())
    _refused(result, "invalid profile name")


def test_a_users_stop_timeout_reaches_the_helper(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    test_image_dir: Path,
) -> None:
    # The user's launcher is stopped; the helper, which runs the container, must give the app
    # the same 20 s, not its default 10, to save for 11 s.
    user_profile(member, ["/bin/sh", "-c", "trap 'sleep 11; echo saved > /root/data/saved; "
                          "exit 0' TERM; touch /root/data/ready; while true; do sleep 0.1; done"])
    env = session_env(xserver, user_x, user_sound)
    launch = as_user(member, [str(USER_COMMAND), "run", NAME], env, background=True)
    assert isinstance(launch, subprocess.Popen)
    try:
        wait_for_file(member.data / "ready", launch)
        stopped = as_user(member, [str(USER_COMMAND), "stop", "--timeout", "20", NAME], env)
        assert isinstance(stopped, subprocess.CompletedProcess)
        assert stopped.returncode == 0, stopped.stderr
        assert launch.wait(timeout=30) == 143
        assert (member.data / "saved").read_text() == "saved\n"
    finally:
        if launch.poll() is None:
            launch.kill()
    assert mounts_under(test_image_dir) == []


def test_a_launch_waits_for_the_root_side_of_the_users_last_one_still_starting(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path, test_image_dir: Path,
) -> None:
    """The user's launcher is killed just after it asked for its launch: the root side of it
    holds the profile before it has written its record. The user's next launch waits for it
    to finish, rather than fail as "already running"."""
    from sandboxapp.undo.ledger import RunDir

    user_profile(member, ["/bin/sh", "-c", "echo ran > /root/data/ran"])
    env = session_env(xserver, user_x, user_sound)
    root_side = RunDir(installed / f"user-{member.uid}")
    with root_side.profile_lock(NAME) as held:
        assert held
        launch = as_user(member, [str(USER_COMMAND), "run", NAME], env, background=True)
        assert isinstance(launch, subprocess.Popen)
        time.sleep(3)
        assert launch.poll() is None, launch.communicate()
    _, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert (member.data / "ran").read_text() == "ran\n"
    assert mounts_under(test_image_dir) == []


def test_sigkill_of_a_users_launcher_at_any_moment_leaves_nothing(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
    installed: Path, test_image_dir: Path, tmp_path: Path,
) -> None:
    """The user's own launcher, killed at each moment of a launch through the helper: the
    helper stops the app and takes back the root side by itself; the user's `cleanup` or next
    launch takes back the user's grants."""
    view = Session(tmp_path, test_image_dir, xserver, user_sound)
    env = session_env(xserver, user_x, user_sound)
    user_profile(member, ["/bin/sh", "-c", APP])
    member.data.mkdir(parents=True)
    (member.data / "precious").write_text(PRECIOUS)
    subprocess.run(["chown", "-R", f"{member.uid}:{member.gid}", str(member.home / ".local")],
                   check=True)
    own = member.runtime / "sandboxapp"
    root_side = installed / f"user-{member.uid}"
    grants, modules = view.x_grants(), view.socket_modules()
    uid = json.loads((test_image_dir / NAME / "image.json").read_text())["uid_base"]

    def helper_started() -> bool:
        return any(HELPER_PATH in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]))

    moments = [
        Moment("at once", lambda: True),
        Moment("record written", (own / f"{NAME}.json").exists),
        Moment("before the X grant", lambda: recorded(own / f"{NAME}.json", "x11")),
        Moment("after the X authorization", (own / ".x11" / NAME / "Xauthority").exists),
        Moment("after the sound socket", (own / NAME / "native").exists),
        Moment("helper started", helper_started),
        Moment("root side's record written", (root_side / f"{NAME}.json").exists),
        Moment("nspawn starting",
               lambda: recorded(root_side / f"{NAME}.json", "container", with_pid=True)),
        Moment("app running", (member.data / "ready").exists),
        Moment("during take-back", (member.data / "done").exists),
    ]

    def left_behind() -> list[str]:
        problems = []
        deadline = time.monotonic() + 20  # the helper's own stop of the app, then take-back
        while list(root_side.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        if records := list(installed.rglob("*.json")) + list(own.glob("*.json")):
            problems.append(f"records {records}")
        if view.x_grants() != grants:
            problems.append(f"X host list {view.x_grants()}")
        if view.socket_modules() != modules:
            problems.append(f"sound modules {view.socket_modules()}")
        if (own / NAME).exists() or (own / ".x11" / NAME).exists():
            problems.append("the sound or X directory")
        if mounts := mounts_under(test_image_dir):
            problems.append(f"mounts {mounts}")
        if left := os.listdir(test_image_dir / ".layers"):
            problems.append(f"layers {left}")
        if processes := wait_for_no_sandbox_processes(uid, timeout=10):
            problems.append(f"processes {processes}")
        if (member.data.stat().st_uid, (member.data / "precious").stat().st_uid) != (
                member.uid, member.uid):
            problems.append("the data directory changed hands")
        return problems

    def start() -> subprocess.Popen[str]:
        launch = as_user(member, [str(USER_COMMAND), "run", NAME], env, background=True)
        assert isinstance(launch, subprocess.Popen)
        return launch

    def undo(cycle: int) -> subprocess.CompletedProcess[str]:
        command = "cleanup" if cycle % 2 == 0 else "run"
        result = as_user(member, [str(USER_COMMAND), command, *([NAME] if cycle % 2 else [])],
                         env)
        assert isinstance(result, subprocess.CompletedProcess)
        return result

    killed_in = kill_at_moments(moments, start, undo, left_behind, member.data)
    assert sum("killed" in line for line in killed_in) >= 8, killed_in


def test_two_users_run_one_profile_at_once_each_in_a_sandbox_of_their_own(
    member: DesktopUser, second_member: DesktopUser, xserver: XServer, installed: Path,
    test_image_dir: Path,
) -> None:
    sandbox = 'x11 = true\nnetwork = "none"\npersist = ["/root/data"]\n'
    launches = {}
    try:
        for user in (member, second_member):
            user_profile(user, ["/bin/sh", "-c",
                                f"echo {user.name} > /root/data/mine; ls /root/data > "
                                "/root/data/seen; (timeout 30 xev -name "
                                f"window-of-{user.name} >/dev/null 2>&1 &); "
                                "touch /root/data/ready; "
                                "while [ ! -e /root/data/go ]; do sleep 0.05; done"], sandbox)
            env = {"DISPLAY": xserver.display,
                   "XAUTHORITY": str(give_cookie(user, xserver.xauthority))}
            launch = as_user(user, [str(USER_COMMAND), "run", NAME], env, background=True)
            assert isinstance(launch, subprocess.Popen)
            launches[user.name] = launch
            wait_for_file(user.data / "ready", launch)
        # Both run at once, each with its own window on the display ...
        deadline = time.monotonic() + 20
        while True:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=xserver.client_env(),
                                  capture_output=True, text=True, check=True).stdout
            if all(f"window-of-{user.name}" in tree for user in (member, second_member)):
                break
            assert time.monotonic() < deadline, tree
            time.sleep(0.1)
        # ... its own root side (record and layer) ...
        for user in (member, second_member):
            assert (installed / f"user-{user.uid}" / f"{NAME}.json").exists()
            assert (test_image_dir / ".layers" / f"{NAME}@u{user.uid}" / "merged").is_dir()
        # ... and its own data only.
        for user in (member, second_member):
            assert (user.data / "mine").read_text() == f"{user.name}\n"
            assert (user.data / "seen").read_text().split() == ["mine", "seen"]
            (user.data / "go").touch()
        for name, launch in launches.items():
            _, err = launch.communicate(timeout=60)
            assert launch.returncode == 0, (name, err)
    finally:
        for launch in launches.values():
            if launch.poll() is None:
                launch.kill()
    assert mounts_under(test_image_dir) == []
    assert not list(installed.rglob("*.json"))


def test_a_users_joined_command_cannot_push_input_into_their_terminal(
    member: DesktopUser, user_x: Path, user_sound: SoundServer, xserver: XServer,
) -> None:
    env = session_env(xserver, user_x, user_sound)
    first = _start_waiting(member, env, "true", as_arguments=True)
    try:
        command = ["setpriv", f"--reuid={member.uid}", f"--regid={member.gid}",
                   "--init-groups", "--", str(USER_COMMAND), "run", NAME, "--", "-c",
                   f"perl -e '{PROBE}'"]
        full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(member.home),
                    "USER": member.name, "XDG_RUNTIME_DIR": str(member.runtime), **env}
        status, output, waiting = run_on_a_terminal(command, full_env)
        assert status == 0, output
        assert "pushed 0 characters" in output, output
        assert b"PWNED" not in waiting, waiting
        (member.data / "go").touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
