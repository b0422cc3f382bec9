"""`sandboxapp run`: stateless launches with real nspawn, Xvfb and PulseAudio."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sandboxapp.fs.util import mounts_under
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    TRUSTED_SANDBOX,
    Session,
    image_uid,
    looping_command,
    sandbox_processes,
    wait_for_file,
    wait_for_no_sandbox_processes,
    waiting_command,
    write_variant,
)


def test_xdpyinfo_runs_in_the_sandbox(session: Session) -> None:
    profile = write_variant(session.profiles, ["xdpyinfo"], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    # Its own display, nested in the user's: not the user's.
    shown = result.stdout.splitlines()[0]
    assert shown.startswith("name of display:    :"), result.stdout[:200]
    assert shown != f"name of display:    {session.xserver.display}"  # type: ignore[union-attr]
    assert "Attempted to remove" not in result.stderr


def test_pactl_info_reaches_the_sound_server_through_its_own_socket(session: Session) -> None:
    profile = write_variant(session.profiles, ["pactl", "info"], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert "Server String: unix:/run/sandboxapp/pulse/native" in result.stdout
    assert "Default Sink: sandboxapp_test_sink" in result.stdout


def test_on_pipewire_the_sandbox_gets_a_socket_of_its_own_too(
        session: Session, tmp_path: Path) -> None:
    from tests.harness import pipewire_server

    with pipewire_server(tmp_path) as pipewire:
        session.sound = pipewire
        grants_before = session.x_grants()
        modules_before = session.socket_modules()
        profile = write_variant(session.profiles, ["pactl", "info"], FULL_SANDBOX)
        result = session.run(str(profile))
        assert result.returncode == 0, result.stderr
        # PipeWire's pulse server, through the sandbox's own socket that the launcher serves.
        assert "Server String: unix:/run/sandboxapp/pulse/native" in result.stdout
        assert "PipeWire" in result.stdout
        assert "falling back" not in result.stderr
        session.assert_nothing_left(grants_before, modules_before)


def test_a_trusted_sandbox_has_a_cookie_of_its_own_exactly_while_it_runs(
        session: Session, tmp_path: Path) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, waiting_command("xdpyinfo >/dev/null"),
                            TRUSTED_SANDBOX)
    copy = tmp_path / "cookie"
    with session.running(profile):
        # No host-list entry: the sandbox holds a trusted authorization of its own, in its X
        # directory, the user's file; no module on the sound server either.
        assert session.x_grants() == grants_before
        cookie = session.x_cookie()
        assert (cookie.stat().st_mode & 0o777, cookie.parent.stat().st_mode & 0o777) == (
            0o600, 0o700)
        copy.write_bytes(cookie.read_bytes())
        admitted = session.x_client_with(copy)
        assert admitted.returncode == 0 and "XTEST" in admitted.stdout, admitted.stderr
        assert session.socket_modules() == modules_before
        assert (session.run_dir / "sound" / NAME / "native").is_socket()
        # Meanwhile a client with another UID (and no cookie) is still refused.
        other = subprocess.run(
            ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups", "xdpyinfo"],
            env={"PATH": "/usr/bin:/bin", "DISPLAY": session.xserver.display},  # type: ignore[union-attr]
            capture_output=True, text=True, check=False,
        )
        assert other.returncode != 0
        assert "unable to open display" in other.stderr
    # Revoked at exit: the cookie the sandbox had lets nobody in.
    refused = session.x_client_with(copy)
    assert refused.returncode != 0 and "unable to open display" in refused.stderr
    session.assert_nothing_left(grants_before, modules_before)


def test_another_sandbox_is_not_admitted_by_a_trusted_grant(session: Session) -> None:
    """Another user's sandbox of the same image runs in the same UID block; with network =
    "host" it reaches the display's abstract socket without any bind. Neither it nor another
    profile's sandbox (another block, the socket bound) gets in without the cookie."""
    profile = write_variant(session.profiles, waiting_command(), TRUSTED_SANDBOX)
    display = session.xserver.display  # type: ignore[union-attr]
    with session.running(profile):
        uid = image_uid(session)
        other_block = uid + 65536 if uid + 131072 < 0x7FFE0000 else uid - 65536
        for block, network in ((uid, []), (other_block, [
                "--private-network", f"--bind-ro=/tmp/.X11-unix/X{display.lstrip(':')}"])):
            other = subprocess.run(
                ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
                 f"--directory={session.image_dir / NAME / 'rootfs'}", "--read-only",
                 f"--private-users={block}:65536", *network, f"--setenv=DISPLAY={display}",
                 "--console=pipe", "--as-pid2", "xdpyinfo"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert other.returncode != 0, (block, other.stdout)
            assert "unable to open display" in other.stderr


def test_only_persist_paths_survive_and_belong_to_the_launching_user(session: Session) -> None:
    session.sudo_uid = 4321
    profile = write_variant(
        session.profiles,
        ["/bin/sh", "-c", "echo kept > /root/data/kept; echo gone > /root/gone; "
                          "mkdir -p /root/data/sub && touch /root/data/sub/file"],
        FULL_SANDBOX,
    )
    first = session.run(str(profile))
    assert first.returncode == 0, first.stderr
    kept = session.persist_dir() / "kept"
    assert kept.read_text() == "kept\n"
    for path in (kept, session.persist_dir(), session.persist_dir() / "sub" / "file",
                 session.data_home / "sandboxapp" / NAME):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path

    check = write_variant(
        session.profiles,
        ["/bin/sh", "-c", "cat /root/data/kept; test ! -e /root/gone && echo clean"],
        FULL_SANDBOX,
    )
    second = session.run(str(check))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["kept", "clean"]


def test_downloads_land_in_a_directory_of_their_own_in_the_users_download_directory(
        session: Session) -> None:
    """sandbox.downloads: the sandbox's /root/Downloads is a directory of its own in the
    download directory user-dirs.dirs names, owned by the user; the user's other downloads
    there stay out of its sight; what an earlier launch kept in the profile's data directory
    is moved in, once."""
    session.sudo_uid = 4321
    downloads = session.tmp / "home" / "Téléchargements"
    downloads.mkdir(parents=True)
    (downloads / "bank-statement.pdf").write_text("private")
    config = session.tmp / "config"
    config.mkdir(exist_ok=True)
    (config / "user-dirs.dirs").write_text(f'XDG_DOWNLOAD_DIR="{downloads}"\n')
    old = session.persist_dir("/root/Downloads")
    old.mkdir(parents=True)
    (old / "earlier.txt").write_text("kept")
    for path in (downloads.parent, downloads, config, config / "user-dirs.dirs",
                 *old.parents[:3], old, old / "earlier.txt"):
        os.chown(path, 4321, 4321)
    profile = write_variant(
        session.profiles,
        ["/bin/sh", "-c", "ls -A /root/Downloads; echo new > /root/Downloads/new.txt; "
                          "find / -path /proc -prune -o -name bank-statement.pdf -print "
                          "2>/dev/null; true"],
        'downloads = "App (sandbox)"\n',
    )
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["earlier.txt"]
    mine = downloads / "App (sandbox)"
    assert sorted(os.listdir(downloads)) == ["App (sandbox)", "bank-statement.pdf"]
    assert (mine / "earlier.txt").read_text() == "kept" and not old.exists()
    assert (mine / "new.txt").read_text() == "new\n"
    for path in (mine, mine / "new.txt", mine / "earlier.txt"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path


def test_a_file_on_the_command_line_is_readable_inside_and_nothing_beside_it(
        session: Session) -> None:
    """`run PROFILE -- FILE` (and a file:// URL): the very file, read-only, its owner's
    private mode kept and readable inside, its siblings out of sight; the sandbox's root can
    neither write it nor remount it writable; another's file, or a symlink, is refused, with exit
    status 2."""
    session.sudo_uid = 4321
    mine = session.tmp / "home" / "docs"
    mine.mkdir(parents=True)
    (mine / "letter.txt").write_text("dear sandbox\n")
    (mine / "diary.txt").write_text("private")
    for path in (mine.parent, mine, mine / "letter.txt", mine / "diary.txt"):
        os.chown(path, 4321, 4321)
    os.chmod(mine / "letter.txt", 0o600)
    script = ('cat "$0"; ls -A "${0%/*}"; ls /run/sandboxapp/files; '
              'mount -o remount,bind,rw "$0" 2>/dev/null && echo remounted; '
              '{ echo changed >> "$0"; } 2>/dev/null || echo refused; echo "$1"')
    profile = write_variant(session.profiles, ["/bin/sh", "-c", script])
    result = session.run(str(profile), "--", str(mine / "letter.txt"),
                         f"file://{mine}/diary.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dear sandbox", "letter.txt", "1", "2", "refused",
        "file:///run/sandboxapp/files/2/diary.txt"]
    assert (mine / "letter.txt").read_text() == "dear sandbox\n"
    roots = session.tmp / "roots.txt"
    roots.write_text("root's")
    refused = session.run(str(profile), "--", str(roots))
    assert refused.returncode == 2, refused.stderr
    assert f"cannot hand {roots} to the sandbox" in refused.stderr
    # A symlink (one the sandbox left in its downloads directory, say) is not followed.
    link = mine / "statement.pdf"
    link.symlink_to(mine / "diary.txt")
    os.chown(link, 4321, 4321, follow_symlinks=False)
    linked = session.run(str(profile), "--", str(link))
    assert linked.returncode == 2, linked.stderr
    assert f"cannot hand {link} to the sandbox: it is a symlink" in linked.stderr


def test_a_file_named_to_a_running_sandbox_is_handed_to_it_and_the_joined_command_reads_it(
        session: Session) -> None:
    """Launched again with a file while it runs (a menu entry's %f): the running sandbox is
    handed the file, and the command run inside it gets its path there."""
    session.sudo_uid = 4321
    letter = session.tmp / "letter.txt"
    letter.write_text("for the running one\n")
    os.chown(letter, 4321, 4321)
    profile = write_variant(session.profiles, ["/bin/sh"], FULL_SANDBOX)
    first = session.start(str(profile), "--", "-c", "touch /root/data/ready; "
                          "while [ ! -e /root/data/go ]; do sleep 0.05; done")
    try:
        wait_for_file(session.persist_dir() / "ready", first)
        joined = session.run(str(profile), "--", "-c",
                             'echo "$0"; cat "$0"; touch /root/data/go', str(letter))
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.splitlines() == ["/run/sandboxapp/files/1/letter.txt",
                                              "for the running one"]
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_stateful_profile_keeps_its_changes_and_a_stateless_one_never_sees_them(
        session: Session) -> None:
    """stateless = false keeps the app's changes to the image for the next run of that user;
    a stateless profile of the same name (another profile file, another user's) starts from
    the pristine image all the same."""
    show = "cat /var/tmp/mark 2>/dev/null || echo pristine"
    stateful = write_variant(session.profiles / "stateful",
                             ["/bin/sh", "-c", f"{show}; echo run >> /var/tmp/mark"],
                             "stateless = false\n")
    stateless = write_variant(session.profiles / "stateless",
                              ["/bin/sh", "-c", f"{show}; echo stateless >> /var/tmp/mark"])
    # An earlier run's (rm: it may be deeper than Python's rmtree goes).
    subprocess.run(["rm", "-rf", str(session.image_dir / ".state" / NAME)], check=True)
    outputs = []
    for profile in (stateful, stateful, stateless, stateful):
        result = session.run(str(profile))
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.split())
    assert outputs == [["pristine"], ["run"], ["pristine"], ["run", "run"]]
    assert mounts_under(session.image_dir) == []
    assert not (session.image_dir / ".layers" / NAME).exists()
    # Another user's run of the stateful profile does not see root's changes.
    session.sudo_uid = 4321
    other = session.run(str(stateful))
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["pristine"]


# Directories 1,100 deep (a path of 2,200 characters).
DEEP = "mkdir -p /var/tmp/deep/$(printf 'd/%.0s' $(seq 1100))"


def test_a_tree_nested_thousands_deep_in_the_layer_goes_with_it(session: Session) -> None:
    """The app nests directories 1,100 deep in its throw-away layer (Python's rmtree gives up
    past a thousand): the launch still ends with the app's status, and the layer is gone."""
    profile = write_variant(session.profiles, ["/bin/sh", "-c", DEEP], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "could not" not in result.stderr, result.stderr
    assert not (session.image_dir / ".layers" / NAME).exists()


def test_reset_drops_what_a_stateful_profile_kept_for_that_user_and_nothing_else(
        session: Session) -> None:
    """`sandboxapp reset` drops the changes a stateful profile kept for the user who asks:
    the next run starts from the pristine image. Another user's changes and the persistent
    directory stay; while the profile runs, nothing is dropped."""
    show = "cat /var/tmp/mark 2>/dev/null || echo pristine"
    stateful = write_variant(
        session.profiles / "stateful",
        ["/bin/sh", "-c", f"{show}; echo run >> /var/tmp/mark; echo mine > /root/data/file; "
                          f"while [ -e /root/data/hold ]; do sleep 0.05; done; {DEEP}"],
        'stateless = false\npersist = ["/root/data"]\n')
    # An earlier run's (rm: it may be deeper than Python's rmtree goes).
    subprocess.run(["rm", "-rf", str(session.image_dir / ".state" / NAME)], check=True)

    def shown() -> list[str]:
        result = session.run(str(stateful))
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert shown() == ["pristine"]
    other = session.image_dir / ".state" / NAME / "4321"  # another user's kept changes
    other.mkdir(mode=0o700)
    (other / "upper").mkdir()
    assert shown() == ["run"]
    # While it runs, its changes stay.
    (session.persist_dir() / "hold").touch()
    launch = session.start(str(stateful))
    try:
        deadline = time.monotonic() + 60
        while not (session.image_dir / ".layers" / NAME / "merged").is_dir():
            assert launch.poll() is None and time.monotonic() < deadline, launch.communicate()
            time.sleep(0.05)
        # Through its lock, and (a launch under another run directory's lock, as root's
        # for a user beside the user's own) through the overlay that writes there.
        for env in (session.env(),
                    {**session.env(), "SANDBOXAPP_RUN_DIR": str(session.tmp / "other-run")}):
            refused = session.sandboxapp("reset", str(stateful), env=env)
            assert refused.returncode == 2, refused.stderr
            said = [line for line in refused.stderr.splitlines()
                    if line.startswith("sandboxapp:")]
            assert len(said) == 1 and "is running" in said[0], refused.stderr
    finally:
        (session.persist_dir() / "hold").unlink()
        assert launch.wait(timeout=60) == 0, launch.communicate()
    assert (session.image_dir / ".state" / NAME / "0").is_dir()
    dropped = session.sandboxapp("reset", str(stateful))
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped what sandboxapp-test kept for you" in dropped.stdout
    assert not (session.image_dir / ".state" / NAME / "0").exists()
    assert (session.persist_dir() / "file").read_text() == "mine\n"
    assert shown() == ["pristine"]
    assert (other / "upper").is_dir()
    # A stateless profile has nothing to drop, and says so on one line.
    plain = write_variant(session.profiles, ["/bin/true"], FULL_SANDBOX)
    nothing = session.sandboxapp("reset", str(plain))
    assert nothing.returncode == 2 and "stateless = true" in nothing.stderr, nothing.stderr
    assert session.sandboxapp("reset", str(stateful)).returncode == 0  # what the last run kept
    subprocess.run(["rm", "-rf", str(other)], check=True)


@pytest.mark.parametrize(
    ("command", "status", "message"),
    [
        (["/bin/sh", "-c", "exit 7"], 7, None),
        (["no-such-program"], 127, "no-such-program: command not found in the image"),
        (["/etc/passwd"], 126, "not executable"),
    ],
    ids=["exit-7", "missing-127", "not-executable-126"],
)
def test_exit_status_is_the_apps(session: Session, command: list[str], status: int,
                                 message: str | None) -> None:
    profile = write_variant(session.profiles, command, FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == status, result.stderr
    if message:
        assert message in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_signals_to_the_launcher_stop_the_app_gracefully_and_revoke(
    session: Session, signum: signal.Signals
) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(
        session.profiles,
        looping_command("trap 'echo saved > /root/data/saved; exit 0' TERM HUP"), FULL_SANDBOX)
    launch = session.start_ready(profile)
    launch.send_signal(signum)
    assert launch.wait(timeout=60) == 128 + signum
    assert (session.persist_dir() / "saved").read_text() == "saved\n"
    session.assert_nothing_left(grants_before, modules_before)


def test_sigkill_of_the_launcher_is_cleaned_up_by_the_next_run(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, waiting_command(), TRUSTED_SANDBOX)
    launch = session.start_ready(profile)
    uid = image_uid(session)
    assert sandbox_processes(uid), "the app should be running"
    copy = session.run_dir.parent / "cookie-of-the-killed-launch"
    copy.write_bytes(session.x_cookie().read_bytes())
    launch.kill()
    launch.wait()
    # The container died with its launcher, at once: nothing runs in the image's UID block ...
    assert wait_for_no_sandbox_processes(uid, timeout=5) == []
    layer = session.image_dir / ".layers" / NAME / "merged"
    # ... but its authorization, socket and layer are still there: SIGKILL runs no cleanup.
    assert session.x_client_with(copy).returncode == 0
    assert (session.run_dir / "sound" / NAME).exists()
    assert layer.exists()

    profile = write_variant(session.profiles, ["xdpyinfo", "-version"], FULL_SANDBOX)
    again = session.run(str(profile))
    assert again.returncode == 0, again.stderr
    assert "cleaned up after sandboxapp-test" in again.stderr
    # The authorization was revoked by the cleanup, not left to its timeout.
    assert session.x_client_with(copy).returncode != 0
    session.assert_nothing_left(grants_before, modules_before)


def test_cleanup_command_undoes_a_killed_launch(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    launch = session.start_ready(profile)
    launch.kill()
    launch.wait()
    time.sleep(0.5)
    result = session.sandboxapp("cleanup")
    assert result.returncode == 0, result.stderr
    assert "cleaned up after sandboxapp-test" in result.stdout
    session.assert_nothing_left(grants_before, modules_before)


def test_cleanup_removes_a_sound_socket_its_killed_launcher_served(session: Session) -> None:
    """The launcher, killed while it served the sandbox's sound socket, leaves the socket and
    its record: cleanup removes both and leaves the user's sound server as it was."""
    assert session.sound is not None
    modules_before = session.socket_modules()
    sound_dir = session.run_dir / "sound" / NAME
    sound_dir.mkdir(parents=True)
    socket_path = sound_dir / "native"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.close()  # as a killed launcher leaves it: bound, no one listening
    record = {"version": 1, "profile": NAME, "pid": 999999999, "started": 1.0, "next_id": 2,
              "entries": [{"id": 1, "kind": "sound", "socket": str(socket_path),
                           "dir": str(sound_dir), "user": os.getuid()}]}
    (session.run_dir / f"{NAME}.json").write_text(json.dumps(record))
    result = session.sandboxapp("cleanup")
    assert result.returncode == 0, result.stderr
    assert "cleaned up after sandboxapp-test" in result.stdout, result.stdout
    assert session.socket_modules() == modules_before
    assert not sound_dir.exists() and not list(session.run_dir.glob("*.json"))


def test_nspawn_failing_to_start_still_revokes_everything(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    # /etc/hostname is a file in the image: nspawn cannot mount a directory on it.
    profile = write_variant(session.profiles, ["xdpyinfo"],
                            'x11 = true\npulseaudio = true\npersist = ["/etc/hostname"]\n')
    result = session.run(str(profile))
    assert result.returncode != 0
    assert "hostname" in result.stderr
    session.assert_nothing_left(grants_before, modules_before)


def test_network_none_has_loopback_only_and_host_shares_the_network(session: Session) -> None:
    none = write_variant(session.profiles, ["ls", "/sys/class/net"], 'network = "none"\n')
    result = session.run(str(none))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo"]
    host = write_variant(session.profiles, ["ls", "/sys/class/net"], 'network = "host"\n')
    result = session.run(str(host))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(os.listdir("/sys/class/net"))


def test_without_x11_there_is_no_socket_and_no_grant(session: Session) -> None:
    grants_before = session.x_grants()
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", "ls -A /tmp; echo DISPLAY=${DISPLAY:-unset}"],
                            "x11 = false\n")
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert "DISPLAY=unset" in result.stdout
    assert ".X11-unix" not in result.stdout
    assert session.x_grants() == grants_before


def test_the_display_socket_alone_is_bound_read_only(session: Session) -> None:
    profile = write_variant(
        session.profiles,
        ["/bin/sh", "-c", "ls -A /tmp/.X11-unix; grep ' /tmp/.X11-unix/' /proc/self/mountinfo; "
                          "echo $DISPLAY"],
        'x11 = true\n',
    )
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    # The nested display's socket, the one DISPLAY names: never the user's.
    number = result.stdout.splitlines()[-1].lstrip(":")
    assert result.stdout.splitlines()[0] == f"X{number}"
    assert number != session.xserver.display.lstrip(":")  # type: ignore[union-attr]
    assert " ro," in result.stdout.splitlines()[1] or " ro " in result.stdout.splitlines()[1]


def test_display_problems_are_launcher_errors(session: Session) -> None:
    profile = write_variant(session.profiles, ["xdpyinfo"], "x11 = true\n")
    env_without_display = session.env()
    del env_without_display["DISPLAY"]
    result = session.sandboxapp("run", str(profile), env=env_without_display)
    assert result.returncode == 125
    assert "DISPLAY is not set" in result.stderr
    gone = session.env()
    gone["DISPLAY"] = ":987"
    result = session.sandboxapp("run", str(profile), env=gone)
    assert result.returncode == 125
    assert "no socket at /tmp/.X11-unix/X987" in result.stderr


@pytest.mark.parametrize("entry", ["+local:", "+si:localuser:#{uid}", "+",
                                   "+si:localuser:#{uid:#x}", "+si:localgroup:#0{uid:o}"])
def test_a_host_network_sandbox_is_refused_where_the_display_admits_it_without_a_cookie(
        session: Session, entry: str) -> None:
    """The user's own host list (xhost +local:, an entry for the image's UID, access control
    off) lets a process in the host's network namespace, running as the sandbox does, into the
    display through its abstract socket: a launch with network = "host" is refused with what
    to remove; with network = "none" the socket is out of its reach, and it runs."""
    uid = image_uid(session)
    client = session.xserver.client_env()  # type: ignore[union-attr]
    grant = entry.format(uid=uid)
    subprocess.run(["xhost", grant], env=client, check=True, capture_output=True)
    try:
        # The door: a process of the sandbox's UID, without a cookie, on the abstract socket.
        door = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "xdpyinfo"],
            env={"PATH": "/usr/bin:/bin", "DISPLAY": session.xserver.display},  # type: ignore[union-attr]
            capture_output=True, text=True, check=False)
        assert door.returncode == 0, door.stderr
        host = write_variant(session.profiles, ["/bin/true"],
                             FULL_SANDBOX.replace('network = "none"', 'network = "host"'))
        refused = session.run(str(host))
        assert refused.returncode == 125, refused.stderr
        said = [line for line in refused.stderr.splitlines() if line.startswith("sandboxapp:")]
        assert len(said) == 1 and "lets programs in without a cookie" in said[0], refused.stderr
        assert 'network = "host"' in said[0] and "Traceback" not in refused.stderr
        assert not (session.image_dir / ".layers" / NAME).exists()
        private = write_variant(session.profiles, ["/bin/true"], FULL_SANDBOX)
        ran = session.run(str(private))
        assert ran.returncode == 0, ran.stderr
    finally:
        subprocess.run(["xhost", "-" + grant[1:]], env=client, check=True, capture_output=True)


def test_a_host_network_sandbox_is_refused_whichever_display_the_user_names(
        session: Session) -> None:
    """The root side tries every X server's abstract name as the sandbox's UID, without a
    cookie: a server that lets it in refuses the launch even where the user's DISPLAY names
    another display, none, or a cookie that does not open it (the host list unread)."""
    client = session.xserver.client_env()  # type: ignore[union-attr]
    subprocess.run(["xhost", "+local:"], env=client, check=True, capture_output=True)
    try:
        host = write_variant(session.profiles, ["/bin/true"],
                             'network = "host"\npersist = ["/root/data"]\n')
        for changed in ({"DISPLAY": ""}, {"XAUTHORITY": "/nonexistent"}):
            env = {**session.env(), **changed}
            refused = session.sandboxapp("run", str(host), env=env)
            assert refused.returncode == 125, refused.stderr
            said = [line for line in refused.stderr.splitlines()
                    if line.startswith("sandboxapp:")]
            # The root side's probe, or (where the launcher's own connection gets in without
            # a cookie, as LOCAL: lets it) the host list read by the user's side first.
            assert len(said) == 1 and "without a cookie" in said[0], said
            assert session.xserver.display in said[0]  # type: ignore[union-attr]
            assert 'network = "host"' in said[0]
    finally:
        subprocess.run(["xhost", "-local:"], env=client, check=True, capture_output=True)
    ran = session.run(str(host))
    assert ran.returncode == 0, ran.stderr


def test_dry_run_prints_the_command_and_changes_nothing(session: Session) -> None:
    profile = write_variant(session.profiles, ["xdpyinfo"], FULL_SANDBOX)
    grants_before = session.x_grants()
    result = session.run("--dry-run", str(profile))
    assert result.returncode == 0, result.stderr
    uid = image_uid(session)
    assert f"--private-users={uid}:65536" in result.stdout
    assert "X11:      a display of its own (Xephyr)" in result.stdout
    assert "XAUTHORITY=/run/sandboxapp/x11/Xauthority" in result.stdout
    trusted = write_variant(session.profiles, ["xdpyinfo"], TRUSTED_SANDBOX)
    result = session.run("--dry-run", str(trusted))
    assert 'X11:      TRUSTED (x11 = "trusted"): an authorization of its own' in result.stdout
    assert "command:  systemd-nspawn" in result.stdout
    assert session.x_grants() == grants_before
    assert not session.run_dir.exists()
    assert not session.data_home.exists()


def test_an_app_that_crashes_is_cleaned_up_after(session: Session) -> None:
    grants_before = session.x_grants()
    modules_before = session.socket_modules()
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "kill -SEGV $$"], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode not in (0, 125)
    session.assert_nothing_left(grants_before, modules_before)


def test_without_a_sound_server_the_app_runs_silently_and_is_told(session: Session) -> None:
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", "echo PULSE_SERVER=${PULSE_SERVER:-unset}"],
                            FULL_SANDBOX)
    env = session.env()
    env["PULSE_SERVER"] = f"unix:{session.tmp}/no-such-server/native"
    result = session.sandboxapp("run", str(profile), env=env)
    assert result.returncode == 0, result.stderr
    assert "PULSE_SERVER=unset" in result.stdout
    assert "warning: no PulseAudio or PipeWire server found: running without sound" in (
        result.stderr
    )


def test_the_sandbox_plays_sound_through_its_own_socket(session: Session) -> None:
    from tests.harness import peak_level, recording

    profile = write_variant(
        session.profiles,
        ["/bin/sh", "-c", "head -c 88200 /dev/urandom | pacat --format=s16le --rate=44100 "
                          "--channels=1 --latency-msec=50"],
        FULL_SANDBOX,
    )
    capture = session.tmp / "capture.raw"
    assert session.sound is not None
    with recording(session.sound, capture):
        result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert peak_level(capture.read_bytes()) > 5000


def test_root_launching_for_itself_keeps_data_in_its_home(session: Session, tmp_path: Path) -> None:
    """An administrator running sandboxapp as plain root: the data goes below /root, as it
    goes below any user's home."""
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "echo kept > /root/data/kept"],
                            FULL_SANDBOX)
    env = session.env()
    home = Path("/root") / f".sandboxapp-test-{tmp_path.name}"
    env["XDG_DATA_HOME"] = str(home)
    try:
        result = session.sandboxapp("run", str(profile), env=env)
        assert result.returncode == 0, result.stderr
        assert (home / "sandboxapp" / NAME / "root" / "data" / "kept").read_text() == "kept\n"
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_an_app_that_restarts_itself_keeps_its_sandbox_until_the_new_instance_ends(
    session: Session,
) -> None:
    # As Firefox does after startup crashes: start the new instance, exit 0 at once.
    restarting = ("(sleep 2; echo new instance > /root/data/restarted) & "
                  "echo old instance exits; exit 0")
    profile = write_variant(session.profiles, ["/bin/sh", "-c", restarting], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    assert (session.persist_dir() / "restarted").read_text() == "new instance\n"
    assert "ended after" not in result.stderr


def test_ctrl_c_to_the_launchers_process_group_stops_the_app_gracefully(
    session: Session,
) -> None:
    # A terminal sends SIGINT to its whole foreground process group: nspawn must not get it
    # (it would SIGKILL the app); the launcher stops the app with SIGTERM.
    profile = write_variant(
        session.profiles,
        looping_command("trap 'echo saved > /root/data/saved; exit 0' TERM"), FULL_SANDBOX)
    launch = session.start(str(profile), own_group=True)
    try:
        wait_for_file(session.persist_dir() / "ready", launch)
        os.killpg(launch.pid, signal.SIGINT)
        assert launch.wait(timeout=60) == 130
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert (session.persist_dir() / "saved").read_text() == "saved\n"
    assert "terminated by signal KILL" not in (launch.stderr.read() if launch.stderr else "")


XSMP_APP = Path(__file__).parent / "sandbox_tools" / "xsmpapp.py"


def start_xsmp_app(session: Session, mode: str) -> subprocess.Popen[str]:
    """A launch of sandbox_tools/xsmpapp.py, registered with the sandbox's session manager."""
    data = session.persist_dir()
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(XSMP_APP, data / XSMP_APP.name)
    profile = write_variant(session.profiles, ["python3", f"/root/data/{XSMP_APP.name}", mode],
                            FULL_SANDBOX)
    launch = session.start(str(profile), own_group=True)
    wait_for_file(data / "ready", launch)
    return launch


def marks(session: Session) -> dict[str, float]:
    """What the app marked, each with when (its own monotonic clock, the host's)."""
    return {name: float((session.persist_dir() / name).read_text().split()[0])
            for name in ("told-to-die", "termed") if (session.persist_dir() / name).exists()}


@pytest.mark.parametrize("way", ["SIGINT to the group", "SIGTERM", "SIGHUP", "stop"])
def test_a_stop_asks_the_app_to_quit_as_a_logout_does_before_any_signal(
        session: Session, way: str) -> None:
    launch = start_xsmp_app(session, "obey")
    try:
        if way == "SIGINT to the group":
            os.killpg(launch.pid, signal.SIGINT)
        elif way == "stop":
            assert session.sandboxapp("stop", NAME).returncode == 0
        else:
            launch.send_signal(signal.SIGTERM if way == "SIGTERM" else signal.SIGHUP)
        launch.wait(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    # SaveYourself, then Die: the app quit by itself, and no signal reached it.
    assert set(marks(session)) == {"told-to-die"}


def test_a_logout_stops_the_sandbox_while_the_desktop_waits_for_it(
        session: Session, tmp_path: Path) -> None:
    """The desktop's session manager (the launcher's own XSMP manager, served here as a
    desktop's) asks its programs to save and quit at logout: the launcher, registered there
    while its sandbox runs, stops it as a logout does (the app told to die, no signal to it;
    the launch's status is SIGHUP's), and leaves the desktop's session only once it has gone."""
    from sandboxapp.host.sessionmanager import serving

    session.session_manager = tmp_path / "desktop-session"
    with serving(session.session_manager) as desktop:
        launch = start_xsmp_app(session, "obey")
        try:
            deadline = time.monotonic() + 10
            while desktop.registered() < 1:
                assert time.monotonic() < deadline, "the launcher never registered"
                time.sleep(0.05)
            assert desktop.ask_to_quit()
            wait_for_file(session.persist_dir() / "told-to-die", launch)
            assert desktop.registered() == 1  # the desktop still waits for the launch
            assert launch.wait(timeout=60) == 128 + signal.SIGHUP
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
        deadline = time.monotonic() + 5
        while desktop.registered():
            assert time.monotonic() < deadline, "the launcher stayed in the desktop's session"
            time.sleep(0.05)
    assert set(marks(session)) == {"told-to-die"}


@pytest.mark.parametrize("manner", ["silent", "garbage"])
def test_a_desktop_session_manager_that_never_answers_right_neither_holds_nor_ends_the_launch(
        session: Session, tmp_path: Path, manner: str) -> None:
    """The desktop's session manager takes the launcher's connection and says nothing, or
    answers with bytes that are no protocol: the launch goes on unregistered and ends when its
    program does, exit status and cleanup its own (libICE's default would exit the launcher
    mid-way, leaving its grants)."""
    import threading

    session.session_manager = tmp_path / "desktop-session"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(session.session_manager))
    listener.listen(4)
    taken: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            taken.append(peer)
            if manner == "garbage":
                peer.recv(1024)
                peer.sendall(os.urandom(4096))

    threading.Thread(target=serve, daemon=True).start()
    try:
        profile = write_variant(session.profiles, ["/bin/sh", "-c", "sleep 1"], FULL_SANDBOX)
        started = time.monotonic()
        result = session.run(str(profile), timeout=60)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 15
        assert "ICE" not in result.stderr, result.stderr
        assert taken, "the launcher never tried the desktop's session manager"
    finally:
        listener.close()
        for peer in taken:
            peer.close()
    assert not list(session.run_dir.glob("*.json"))


def test_an_app_that_does_not_quit_when_asked_gets_sigterm_after_the_grace(
        session: Session) -> None:
    launch = start_xsmp_app(session, "ignore")
    try:
        stopped = session.sandboxapp("stop", "--timeout", "2", NAME)
        assert stopped.returncode == 0, stopped.stderr
        assert launch.wait(timeout=60) == 143
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    marked = marks(session)
    assert set(marked) == {"told-to-die", "termed"}
    assert 1.8 <= marked["termed"] - marked["told-to-die"] <= 4


def test_an_app_without_session_management_is_asked_to_close_its_window_first(
        session: Session) -> None:
    """xeyes speaks no XSMP: a stop asks its window to close (WM_DELETE_WINDOW, through the
    nested display the launcher owns), as a desktop's close button does, and it quits by
    itself (status 0) before any signal. (Its shell notes a SIGTERM, which the stop would
    send the app otherwise, and passes it on.)"""
    from tests.integration.test_firefox import wait_for_window

    assert session.xserver is not None
    data = session.persist_dir()
    profile = write_variant(session.profiles, [
        "/bin/sh", "-c", "xeyes & eyes=$!; "
        "trap 'echo > /root/data/termed; kill -TERM $eyes' TERM; "
        "wait $eyes; wait $eyes; echo $? > /root/data/status"], FULL_SANDBOX)
    launch = session.start(str(profile), own_group=True)
    try:
        wait_for_window(session.xserver, "xeyes", launch)
        stopped = session.sandboxapp("stop", NAME)
        assert stopped.returncode == 0, stopped.stderr
        launch.wait(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert not (data / "termed").exists()
    assert (data / "status").read_text().strip() == "0"


def test_a_second_ctrl_c_stops_at_once(session: Session) -> None:
    """Asked to quit, the app stays, and ignores SIGTERM too: the user's second Ctrl-C ends
    it at once, not after the grace."""
    launch = start_xsmp_app(session, "stubborn")
    try:
        os.killpg(launch.pid, signal.SIGINT)
        wait_for_file(session.persist_dir() / "told-to-die", launch)
        second = time.monotonic()
        os.killpg(launch.pid, signal.SIGINT)
        assert launch.wait(timeout=60) == 130
        assert time.monotonic() - second < 3
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()


def test_an_app_that_ends_at_once_without_output_is_named(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/sh", "-c", "exit 0"], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "ended after" in line]
    assert len(lines) == 1, result.stderr
    assert "/bin/sh ended after" in lines[0] and "with exit status 0 and no output" in lines[0]
    log = lines[0].split("its run log: ")[1]
    assert Path(log).is_file() and "ended after" in Path(log).read_text()
    # The same program with something to say is not named.
    talking = write_variant(session.profiles, ["/bin/sh", "-c", "echo hello"], FULL_SANDBOX)
    result = session.run(str(talking))
    assert result.stdout == "hello\n" and "ended after" not in result.stderr


def test_command_replaces_the_profiles_program_and_args_still_append(session: Session) -> None:
    profile = write_variant(session.profiles, ["/bin/echo", "from-the-profile"], FULL_SANDBOX)
    replaced = session.run("--command", "/bin/echo", str(profile), "--", "replaced", "$HOME")
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout == "replaced $HOME\n"
    by_name = session.run("--command", "printenv", str(profile), "--", "DISPLAY")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.strip().startswith(":")
    appended = session.run(str(profile), "--", "appended")
    assert appended.stdout == "from-the-profile appended\n"
    missing = session.run("--command", "no-such-program", str(profile))
    assert missing.returncode == 127
    assert missing.stderr.splitlines()[0] == (
        "sandboxapp: no-such-program: command not found in the image")
    empty = session.run("--command", "", str(profile))
    assert empty.returncode == 2 and "--command needs a program" in empty.stderr
    assert "Traceback" not in empty.stderr + missing.stderr
