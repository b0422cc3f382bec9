"""The file chooser portal a sandbox's own bus offers: a program inside asks, as it would ask
xdg-desktop-portal; the dialog is the user's desktop's own (xdg-desktop-portal with its GTK
backend on the session's bus, under Xvfb), answered with xdotool as a user would; the file
chosen there, and nothing beside it, becomes readable inside."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandboxapp.features.container import PORTAL_DIR as FEATURE_PORTAL_DIR
from tests.harness import DesktopPortal, XServer, desktop_portal
from tests.integration.conftest import REPO
from tests.integration.launching import Session, write_variant

TITLE = "sandboxapp-test (sandbox): Pick a letter"
SAVE_TITLE = "sandboxapp-test (sandbox): Save the report"
# Inside: watch the portal's answers, ask (again until the launcher serves the portal), wait
# for the answer, say it, and do `then` with the path it names.
ASK = r"""
gdbus monitor --session --dest org.freedesktop.portal.Desktop > /tmp/answers 2>&1 &
monitor=$!
trap 'kill $monitor' EXIT
n=0
until gdbus call --session --dest org.freedesktop.portal.Desktop \
    --object-path /org/freedesktop/portal/desktop \
    --method org.freedesktop.portal.FileChooser.$0 "" "$1" "$2" > /tmp/handle 2>/dev/null; do
  n=$((n+1)); [ $n -lt 100 ] || exit 3; sleep 0.1
done
n=0
until grep -q 'Response' /tmp/answers; do n=$((n+1)); [ $n -lt 600 ] || exit 4; sleep 0.1; done
sleep 0.2
grep -o 'Response (uint32 [0-9]*' /tmp/answers | head -1
uri=$(grep -o "file://[^']*" /tmp/answers | head -1)
[ -n "$uri" ] || exit 0
echo "$uri"
path=${uri#file://}
"""
# Read the chosen file and list what is beside it.
READ = 'cat "$path"; ls -A "${path%/*}"'
# Save as Firefox does: into NAME.part, renamed when done.
SAVE = 'printf "the report\\n" > "$path.part"; mv "$path.part" "$path"'


@pytest.fixture
def portal(tmp_path: Path, xserver: XServer) -> Iterator[DesktopPortal]:
    with desktop_portal(tmp_path, xserver) as found:
        yield found


def _launch(session: Session, portal: DesktopPortal, member: str, title: str, options: str,
            then: str) -> subprocess.Popen[str]:
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", ASK + then, member, title, options],
                            "session_bus = true\nfile_chooser = true\n")
    return subprocess.Popen([sys.executable, "-m", "sandboxapp", "run", str(profile)],
                            env={**session.env(), **portal.env()}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _launched(session: Session, portal: DesktopPortal, member: str = "OpenFile",
              title: str = "Pick a letter", options: str = "{'handle_token': <'t1'>}",
              then: str = READ) -> Iterator[subprocess.Popen[str]]:
    """A launch of the asking profile, killed if the test ends before it does."""
    launch = _launch(session, portal, member, title, options, then)
    try:
        yield launch
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()


def _dialogs_owner() -> set[int]:
    """The UIDs the launcher's dialog processes run as."""
    found = set()
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if "sandboxapp.host.chooser" in " ".join(process.cmdline()):
                found.add(process.uids().real)
    return found


def test_the_file_chosen_in_the_desktops_dialog_alone_is_readable_inside(
        session: Session, portal: DesktopPortal) -> None:
    user = portal.user
    session.sudo_uid = user.uid
    docs = user.home / "docs"
    docs.mkdir()
    (docs / "letter.txt").write_text("chosen bytes\n")
    (docs / "diary.txt").write_text("private")
    for path in (docs, docs / "letter.txt", docs / "diary.txt"):
        os.chown(path, user.uid, user.gid)
    os.chmod(docs / "letter.txt", 0o600)
    with _launched(session, portal) as launch:
        window = portal.window(TITLE)
        assert _dialogs_owner() == {user.uid}  # the dialog is the user's, never root's
        portal.type_path(window, str(docs / "letter.txt"))
        out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert out.splitlines() == ["Response (uint32 0", "file:///run/sandboxapp/files/1/letter.txt",
                                "chosen bytes", "letter.txt"], err


def test_a_dialog_the_user_cancels_gives_the_portals_cancel_and_no_file(
        session: Session, portal: DesktopPortal) -> None:
    session.sudo_uid = portal.user.uid
    with _launched(session, portal) as launch:
        portal.cancel(portal.window(TITLE))
        out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert out.splitlines() == ["Response (uint32 1"], err


def test_a_dialog_open_when_the_launch_ends_is_closed_with_it(
        session: Session, portal: DesktopPortal) -> None:
    """The launch ends (here its launcher is told to stop) while the user has not answered:
    the dialog leaves the desktop with it, and no dialog process of the launch's is left."""
    session.sudo_uid = portal.user.uid
    with _launched(session, portal) as launch:
        portal.window(TITLE)
        launch.terminate()
        launch.communicate(timeout=60)
    assert portal.gone(TITLE), "the dialog stayed on the desktop after its launch ended"
    assert _dialogs_owner() == set()


def test_a_dialog_open_when_the_app_ends_is_closed_and_the_launch_ends_quietly(
        session: Session, portal: DesktopPortal) -> None:
    """The program asks, then ends while the user has not answered: its bus is gone with it.
    The dialog leaves the desktop, the launch ends with the program's status, and the answer
    nobody can take any more is dropped without a word (no traceback on the user's
    terminal)."""
    session.sudo_uid = portal.user.uid
    ask_and_leave = r"""
n=0
until gdbus call --session --dest org.freedesktop.portal.Desktop \
    --object-path /org/freedesktop/portal/desktop \
    --method org.freedesktop.portal.FileChooser.OpenFile "" "Pick a letter" \
    "{'handle_token': <'t1'>}" > /dev/null 2>&1; do
  n=$((n+1)); [ $n -lt 100 ] || exit 3; sleep 0.1
done
sleep 8
exit 7
"""
    profile = write_variant(session.profiles, ["/bin/sh", "-c", ask_and_leave],
                            "session_bus = true\nfile_chooser = true\n")
    launch = subprocess.Popen([sys.executable, "-m", "sandboxapp", "run", str(profile)],
                              env={**session.env(), **portal.env()}, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        portal.window(TITLE)
        _, err = launch.communicate(timeout=90)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert launch.returncode == 7, err
    assert portal.gone(TITLE), "the dialog stayed on the desktop after its program ended"
    assert _dialogs_owner() == set()
    assert "Traceback" not in err and "Exception" not in err, err


# The launcher's portal on a bus of its own; a client of that bus floods it with requests it
# refuses, and the bus daemon is killed while the answers are being written: what the launcher
# says of that goes to its error output.
BUS_DIES = r"""
import subprocess, sys, time
from pathlib import Path
from sandboxapp.host.chooser import Choice
from sandboxapp.host.portal import FileChooserPortal
d = Path(sys.argv[1])
# As the sandbox's bus lets the launcher in: anonymously (features/container.py).
(d / "bus.conf").write_text(
    "<busconfig><type>session</type><listen>unix:path=" + str(d) + "/bus</listen>"
    "<auth>EXTERNAL</auth><auth>ANONYMOUS</auth><allow_anonymous/>"
    "<policy context='default'><allow send_destination='*' eavesdrop='true'/>"
    "<allow eavesdrop='true'/><allow own='*'/></policy></busconfig>")
daemon = subprocess.Popen(["dbus-daemon", f"--config-file={d}/bus.conf", "--nofork",
                           "--nopidfile", "--print-address"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
address = daemon.stdout.readline().decode().strip()
portal = FileChooserPortal(d / "bus", "app", choose=lambda ask, stop: Choice(1),
                           hand=lambda path: path, save_to=lambda path, replace: path,
                           focused=lambda: True, warn=lambda text: print("said:", text))
portal.start()
time.sleep(1)
# The flooding client's own complaints, once its bus is gone, are not the launcher's.
flood = subprocess.Popen([sys.executable, "-c", sys.argv[2], address],
                         stderr=subprocess.DEVNULL)
time.sleep(0.3)
daemon.kill()
daemon.wait()
time.sleep(0.5)
flood.kill()
flood.wait()
portal.close()
import gc
gc.collect()
"""
FLOOD = r"""
import asyncio, sys
from dbus_fast import Message, MessageFlag, Variant
from dbus_fast.aio import MessageBus
async def flood():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    for n in range(3000):
        bus.send(Message(destination="org.freedesktop.portal.Desktop",
                         path="/org/freedesktop/portal/desktop",
                         interface="org.freedesktop.portal.FileChooser", member="OpenFile",
                         signature="ssa{sv}", flags=MessageFlag.NO_REPLY_EXPECTED,
                         body=["", "x", {"directory": Variant("b", True)}]))
        if n % 50 == 0:
            await asyncio.sleep(0.001)
    await asyncio.sleep(5)
asyncio.run(flood())
"""


def test_a_bus_that_dies_while_answers_are_written_leaves_no_traceback(tmp_path: Path) -> None:
    """The sandbox's bus daemon goes (killed, or its program ended) while the portal is
    writing the answers to a flood of requests: the launcher says no more than its one line
    on the requests it refused, never a traceback on the user's terminal."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", BUS_DIES, str(tmp_path), FLOOD], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "exception" not in done.stderr, done.stderr
        assert [line for line in done.stdout.splitlines()
                if not line.startswith("said: the file chooser refused")] == [], done.stdout


def test_a_save_lands_on_the_path_the_user_chose_owned_by_them(
        session: Session, portal: DesktopPortal) -> None:
    """SaveFile: the program writes NAME.part in a directory of the request's and renames it,
    as Firefox does; the finished file is moved onto the host path the user chose, theirs,
    and nothing else the save made is left there."""
    user = portal.user
    session.sudo_uid = user.uid
    docs = user.home / "docs"
    docs.mkdir()
    os.chown(docs, user.uid, user.gid)
    with _launched(session, portal, "SaveFile", "Save the report",
                   "{'handle_token': <'t2'>, 'current_name': <'report.txt'>}", SAVE) as launch:
        portal.type_save_path(portal.window(SAVE_TITLE), str(docs / "report.txt"))
        out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert out.splitlines() == ["Response (uint32 0",
                                "file:///run/sandboxapp/saving/1/report.txt"], err
    saved = docs / "report.txt"
    assert saved.read_text() == "the report\n"
    assert (saved.stat().st_uid, saved.stat().st_gid) == (user.uid, user.gid)
    assert os.listdir(docs) == ["report.txt"]


def test_a_request_for_a_folder_is_refused_without_a_dialog(
        session: Session, portal: DesktopPortal) -> None:
    """Only files are handed to a sandbox: a request for a folder is answered "failed" (2)
    at once, and nothing is shown on the user's desktop."""
    session.sudo_uid = portal.user.uid
    with _launched(session, portal, options="{'handle_token': <'t3'>, 'directory': <true>}",
                   ) as launch:
        out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert out.splitlines() == ["Response (uint32 2"], err
    assert "only files are handed to a sandbox" in err
    assert _dialogs_owner() == set()


def test_a_request_while_the_sandboxs_window_lacks_the_focus_is_refused_without_a_dialog(
        session: Session, portal: DesktopPortal) -> None:
    """The sandbox asks, the user chooses: with a display of its own whose window does not
    have the user's focus (here it never mapped one), a request is answered "failed" and no
    dialog is shown over what the user is doing."""
    session.sudo_uid = portal.user.uid
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", ASK + READ, "OpenFile", "Pick a letter",
                             "{'handle_token': <'t4'>}"],
                            "x11 = true\nsession_bus = true\nfile_chooser = true\n")
    launch = subprocess.run([sys.executable, "-m", "sandboxapp", "run", str(profile)],
                            env={**session.env(), **portal.env()}, cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert launch.returncode == 0, launch.stderr
    assert launch.stdout.splitlines() == ["Response (uint32 2"], launch.stderr
    assert "asked for a file dialog while you were elsewhere: refused" in launch.stderr
    assert _dialogs_owner() == set()


def test_several_saves_land_in_the_folder_the_user_chose(
        session: Session, portal: DesktopPortal) -> None:
    """SaveFiles: the user picks a folder (the dialog starts in their download directory) and
    each file the program saves lands there, under its own name, theirs."""
    user = portal.user
    session.sudo_uid = user.uid
    config = session.tmp / "config"
    config.mkdir(exist_ok=True)
    (config / "user-dirs.dirs").write_text('XDG_DOWNLOAD_DIR="$HOME/Downloads"\n')
    save_all = ('for uri in $(grep -o "file://[^\']*" /tmp/answers); do p=${uri#file://}; '
                'printf "%s\\n" "${p##*/}" > "$p.part"; mv "$p.part" "$p"; done')
    profile = write_variant(
        session.profiles,
        ["/bin/sh", "-c", ASK + save_all, "SaveFiles", "Save both",
         "{'handle_token': <'t5'>, 'files': <[b'one.txt', b'two.txt']>}"],
        'session_bus = true\nfile_chooser = true\ndownloads = "Test (sandbox)"\n')
    launch = subprocess.Popen([sys.executable, "-m", "sandboxapp", "run", str(profile)],
                              env={**session.env(), **portal.env()}, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        dialog, _ = portal.dialog()
        portal.press(dialog, "alt+s")
        out, err = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert launch.returncode == 0, err
    downloads = user.home / "Downloads"
    assert out.splitlines()[0] == "Response (uint32 0", err
    for name in ("one.txt", "two.txt"):
        saved = downloads / name
        assert saved.read_text() == f"{name}\n", err
        assert saved.stat().st_uid == user.uid
    assert sorted(os.listdir(downloads)) == ["Test (sandbox)", "one.txt", "two.txt"]


def test_a_sandbox_that_spoils_the_portals_door_loses_its_portal_and_nothing_else(
        session: Session, portal: DesktopPortal, tmp_path: Path) -> None:
    """The directory the sandbox's bus makes its socket in is the sandbox's to write: one that
    puts a folder where the socket was, junk in it, symlinks to a file of the user's and a
    FIFO, gets no portal; the launch ends as its command does, the directory goes with
    everything in it but not what the symlinks name, and the next launch has its portal."""
    user = portal.user
    session.sudo_uid = user.uid
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "kept.txt").write_text("the user's\n")
    for path in (victim, victim / "kept.txt"):
        os.chown(path, user.uid, user.gid)
    spoil = (f'd={FEATURE_PORTAL_DIR}; n=0; until [ -S $d/bus ]; do n=$((n+1)); '
             '[ $n -lt 100 ] || exit 3; sleep 0.1; done; rm $d/bus; mkdir -p $d/bus/a/b; '
             'head -c 100000 /dev/zero > $d/bus/a/b/junk; '
             f'ln -s {victim} $d/bus/a/escape; ln -s {victim}/kept.txt $d/kept.txt; '
             'mkfifo $d/fifo; echo spoiled')
    profile = write_variant(session.profiles, ["/bin/sh", "-c", spoil],
                            "session_bus = true\nfile_chooser = true\n")
    spoiled = subprocess.run([sys.executable, "-m", "sandboxapp", "run", str(profile)],
                             env={**session.env(), **portal.env()}, cwd=REPO,
                             capture_output=True, text=True, timeout=120, check=False)
    assert (spoiled.returncode, spoiled.stdout) == (0, "spoiled\n"), spoiled.stderr
    assert "Traceback" not in spoiled.stderr
    assert not (session.data_home / "sandboxapp" / profile.stem / ".portal").exists()
    assert (victim / "kept.txt").read_text() == "the user's\n"
    with _launched(session, portal) as launch:
        portal.cancel(portal.window(TITLE))
        out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert out.splitlines() == ["Response (uint32 1"], err
