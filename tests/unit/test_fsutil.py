from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.fs.util import exchange, remove_tree
from sandboxapp.image.build import clean_debris
from sandboxapp.image.store import ImageStore
from sandboxapp.undo.ledger import process_identity


class Collected:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def stage(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append("warning: " + text)


def test_remove_tree_refuses_a_directory_sandboxapp_did_not_mark(tmp_path: Path) -> None:
    victim = tmp_path / "data"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    with pytest.raises(SandboxError, match="did not make it"):
        remove_tree(victim, marker="build.json")
    assert (victim / "precious").read_text() == "keep me"


def test_remove_tree_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "build.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SandboxError, match="not a directory"):
        remove_tree(link, marker="build.json")
    assert (target / "build.json").exists()


def test_remove_tree_does_not_follow_symlinks_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_text("x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "build.json").write_text("{}")
    (tree / "sub" / "link").symlink_to(outside)
    remove_tree(tree, marker="build.json")
    assert not tree.exists()
    assert (outside / "file").read_text() == "x"


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").touch()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two").touch()
    exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "two").exists() and (tmp_path / "b" / "one").exists()


def test_debris_of_dead_builders_goes_live_builds_and_foreign_dirs_stay(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.ensure()
    dead = tmp_path / ".build-app-dead"
    (dead / "rootfs" / "etc").mkdir(parents=True)
    (dead / "build.json").write_text(json.dumps({"pid": 999999999, "started": 1.0}))
    live = tmp_path / ".build-app-live"
    live.mkdir()
    pid, started = process_identity()
    (live / "build.json").write_text(json.dumps({"pid": pid, "started": started}))
    unmarked = tmp_path / ".build-app-unmarked"
    unmarked.mkdir()
    (unmarked / "something").write_text("not ours to delete")
    progress = Collected()
    clean_debris(store, progress)
    assert not dead.exists()
    assert live.exists()
    assert (unmarked / "something").exists()
    assert any(".build-app-dead" in line for line in progress.lines)


def test_nothing_below_roots_home_is_made_a_users() -> None:
    """Root acting for a user makes the user's directories as theirs: never in root's home
    or the system's places, whatever HOME or XDG_DATA_HOME said."""
    from sandboxapp.fs.safepath import DesktopUser, ensure_user_dir

    target = Path("/root/.sandboxapp-unit-test/data")
    for path in (target, Path("/etc/sandboxapp-unit-test")):
        with pytest.raises(SandboxError, match=f"nothing below /{path.parts[1]} is made a user's"):
            ensure_user_dir(path, DesktopUser(4321, 4321))
        assert not Path("/", *path.parts[1:3]).exists()


def users_and_roots(tmp_path: Path, user: DesktopUser) -> tuple[Path, Path, Path]:
    """(the user's home, a directory of theirs in it, a directory of root's)."""
    home = tmp_path / "home"
    mine = home / "mine"
    mine.mkdir(parents=True)
    for made in (home, mine):
        os.chown(made, user.uid, user.gid)
    roots = tmp_path / "roots"
    roots.mkdir()
    return home, mine, roots


def test_a_file_root_writes_for_a_user_goes_into_their_directory_and_nowhere_else(
        tmp_path: Path) -> None:
    """Root writing a file into a user's directory (the sandbox's Xauthority file, its sound
    client configuration) writes it through that directory as opened without following
    symlinks: a directory swapped for a symlink to root's is refused, a symlink at the file's
    name is replaced, never written through, and the file is the user's."""
    from sandboxapp.fs.safepath import write_user_file

    user = DesktopUser(4321, 4321)
    home, mine, roots = users_and_roots(tmp_path, user)
    (roots / "precious").write_text("root's")
    (mine / "conf").symlink_to(roots / "precious")
    written = write_user_file(mine, "conf", b"the sandbox's", user, 0o600)
    assert written.read_bytes() == b"the sandbox's" and not written.is_symlink()
    assert (roots / "precious").read_text() == "root's"
    assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (4321, 0o600)
    swapped = home / "swapped"
    swapped.symlink_to(roots)
    with pytest.raises(SandboxError, match="symlink"):
        write_user_file(swapped, "conf", b"the sandbox's", user, 0o600)
    assert sorted(p.name for p in roots.iterdir()) == ["precious"]


def test_a_run_log_root_keeps_for_a_user_never_writes_or_prunes_outside_their_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo sandboxapp run` keeps its run log in the user's state directory: a directory
    swapped for a symlink to root's right after it was checked gets no log of root's making
    and loses none of its *.log files; in the user's own, the newest logs are kept."""
    from sandboxapp.host import notify

    user = DesktopUser(4321, 4321)
    home, _, roots = users_and_roots(tmp_path, user)
    for n in range(notify.KEEP_LOGS + 2):
        (roots / f"{n:02}.log").write_text("root's")
    checked = notify.ensure_user_dir

    def checked_then_swapped(path: Path, who: DesktopUser) -> None:
        checked(path, who)
        path.rename(path.with_name("moved"))
        path.symlink_to(roots)

    monkeypatch.setattr(notify, "ensure_user_dir", checked_then_swapped)
    with pytest.raises(SandboxError, match="symlink"):
        notify.RunLog(home, "app", user)
    assert sorted(p.name for p in roots.iterdir()) == [
        f"{n:02}.log" for n in range(notify.KEEP_LOGS + 2)]
    monkeypatch.undo()
    logs = home / "sandboxapp" / "moved"
    for n in range(notify.KEEP_LOGS + 2):
        (logs / f"{n:02}.log").write_text("old")
    (home / "sandboxapp" / "app").unlink()
    (home / "sandboxapp" / "moved").rename(home / "sandboxapp" / "app")
    log = notify.RunLog(home, "app", user)
    log.close()
    kept = sorted(p.name for p in log.directory.iterdir())
    assert len(kept) == notify.KEEP_LOGS and kept[-1] == log.path.name
    assert (log.path.stat().st_uid, log.path.stat().st_mode & 0o777) == (4321, 0o600)


def test_a_sandbox_socket_is_made_and_removed_in_the_users_directory_alone(
        tmp_path: Path) -> None:
    """The sound and session manager sockets root serves for a user: a directory swapped for
    a symlink to root's is refused (nothing made or opened up there), and once made, a
    directory swapped afterwards does not send the socket's removal into root's."""
    from sandboxapp.host.unixsocket import SandboxListener

    user = DesktopUser(4321, 4321)
    home, mine, roots = users_and_roots(tmp_path, user)
    (roots / "native").write_text("root's")
    os.chmod(roots / "native", 0o600)
    swapped = home / "swapped"
    swapped.symlink_to(roots)
    with pytest.raises(SandboxError, match="symlink"):
        SandboxListener(swapped / "native", 4, user)
    assert (roots / "native").read_text() == "root's"
    assert (roots / "native").stat().st_mode & 0o777 == 0o600
    listener = SandboxListener(mine / "native", 4, user)
    assert (mine / "native").is_socket() and (mine / "native").stat().st_mode & 0o777 == 0o666
    mine.rename(home / "moved")
    mine.symlink_to(roots)
    listener.close()
    assert (roots / "native").read_text() == "root's"
    assert not (home / "moved" / "native").exists()


@pytest.mark.parametrize(("line", "expected"), [
    (None, "home/Downloads"),
    ('XDG_DOWNLOAD_DIR="$HOME/Téléchargements"', "home/Téléchargements"),
    ('XDG_DOWNLOAD_DIR="/data/dl"', "/data/dl"),
    ('XDG_DOWNLOAD_DIR="$HOME"', "home"),
    ('XDG_DOWNLOAD_DIR="$HOME/My \\"Files\\""', 'home/My "Files"'),
    ('XDG_DOWNLOAD_DIR="relative"', "home/Downloads"),
    ('# XDG_DOWNLOAD_DIR="$HOME/commented"', "home/Downloads"),
])
def test_the_download_directory_is_the_xdg_user_directory(tmp_path: Path, line: str | None,
                                                           expected: str) -> None:
    from sandboxapp.fs.userdirs import download_dir

    user = DesktopUser(os.getuid(), os.getgid())
    config = tmp_path / "config"
    config.mkdir()
    if line is not None:
        (config / "user-dirs.dirs").write_text(f'XDG_DESKTOP_DIR="$HOME/Desktop"\n{line}\n')
    found = download_dir(config, tmp_path / "home", user)
    assert found == (Path(expected) if expected.startswith("/") else tmp_path / expected)


def test_kept_downloads_move_in_once_and_none_is_lost_or_written_over(tmp_path: Path) -> None:
    """What the profile's data directory kept is renamed into its downloads directory: a name
    that is taken there gets " (2)", nothing is copied or overwritten, the old directory goes
    once empty; a symlink put in the old directory's place is refused, and nothing moves."""
    from sandboxapp.fs.safepath import move_user_entries

    user = DesktopUser(4321, 4321)
    _, mine, roots = users_and_roots(tmp_path, user)
    old, new = mine / "old", mine / "new"
    for made in (old, new):
        made.mkdir()
        os.chown(made, 4321, 4321)
    (old / "report.pdf").write_text("old report")
    (old / "photo.tar.gz").write_text("old photo")
    (old / "folder").mkdir()
    (new / "report.pdf").write_text("new report")
    assert move_user_entries(old, new, user) == []
    assert not old.exists()
    assert sorted(p.name for p in new.iterdir()) == [
        "folder", "photo.tar.gz", "report (2).pdf", "report.pdf"]
    assert (new / "report.pdf").read_text() == "new report"
    assert (new / "report (2).pdf").read_text() == "old report"
    assert move_user_entries(old, new, user) == []  # once: nothing left to move
    (roots / "secret").write_text("root's")
    old.symlink_to(roots)
    with pytest.raises(SandboxError, match="symlink"):
        move_user_entries(old, new, user)
    assert (roots / "secret").read_text() == "root's"
    assert not (new / "secret").exists()


def test_a_directory_a_sandbox_wrote_in_is_removed_whole_and_nothing_through_it(
        tmp_path: Path) -> None:
    """The file chooser's directory, where the sandbox writes: at the launch's end it goes
    with whatever was put there (folders, a symlink to a folder), and a symlink put in its
    place sends the removal nowhere."""
    from sandboxapp.fs import nofollow

    user = DesktopUser(4321, 4321)
    home, mine, roots = users_and_roots(tmp_path, user)
    (roots / "keep").write_text("root's")
    door = mine / "door"
    (door / "bus" / "x").mkdir(parents=True)
    (door / "bus" / "x" / "junk").write_text("junk")
    (door / "to-roots").symlink_to(roots)
    (door / "file").write_text("file")
    os.chown(door, user.uid, user.gid)
    nofollow.clear_user_dir(str(door), user.uid)
    assert not door.exists() and (roots / "keep").read_text() == "root's"
    (home / "swapped").symlink_to(roots)
    nofollow.clear_user_dir(str(home / "swapped"), user.uid)
    assert (roots / "keep").read_text() == "root's"


def test_a_directory_a_sandbox_nested_thousands_deep_is_removed_all_the_same(
        tmp_path: Path) -> None:
    """A sandbox can nest folders deeper than Python recurses and than the launcher may hold
    descriptors: the launch's end removes them all, and follows none of the symlinks in them."""
    from sandboxapp.fs import nofollow

    user = DesktopUser(4321, 4321)
    _, mine, roots = users_and_roots(tmp_path, user)
    (roots / "keep").write_text("root's")
    door = mine / "door"
    door.mkdir()
    os.chown(door, user.uid, user.gid)
    fd = os.open(door, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        os.symlink(roots, "to-roots", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)
    try:
        nofollow.clear_user_dir(str(door), user.uid)
        assert not door.exists()
        assert os.listdir(roots) == ["keep"] and (roots / "keep").read_text() == "root's"
    finally:  # pytest's own removal of tmp_path recurses, and would fail
        nofollow.clear_user_dir(str(door), user.uid)


@pytest.mark.parametrize("uid", [0, 4321], ids=["the user's own call", "root acting for a user"])
def test_a_file_handed_to_a_sandbox_is_a_regular_file_opened_without_a_symlink(
        tmp_path: Path, uid: int) -> None:
    """A symlink named like a download (a sandbox can put one in its downloads directory)
    and a FIFO (which would hold the launcher) are refused at once; the file itself opens."""
    from sandboxapp.fs import nofollow
    from sandboxapp.fs.safepath import open_for_reading

    user = DesktopUser(uid, uid)
    (tmp_path / "key").write_text("secret")
    (tmp_path / "invoice.pdf").symlink_to(tmp_path / "key")
    os.mkfifo(tmp_path / "fifo")
    for name in ("key", "invoice.pdf", "fifo"):
        os.chown(tmp_path / name, uid, uid, follow_symlinks=False)
    for name in ("invoice.pdf", "fifo"):
        with pytest.raises((OSError, nofollow.Refused)):
            open_for_reading(tmp_path / name, user)
    fd = open_for_reading(tmp_path / "key", user)
    assert os.read(fd, 10) == b"secret"
    os.close(fd)


def test_a_directory_a_sandbox_locked_is_removed_by_the_user_it_belongs_to(
        tmp_path: Path) -> None:
    """The launcher runs as the desktop user: folders the sandbox (the same user, to the
    host) made read-only or unreadable, with files in them, are removed all the same, and
    clear_user_dir says so; a directory that is root's is never cleared for a user."""
    import subprocess
    import sys
    import tempfile

    from sandboxapp.fs import nofollow

    user = DesktopUser(4321, 4321)
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="sandboxapp-test-"))
    try:
        os.chmod(base, 0o755)
        (base / "home").mkdir()
        os.chown(base / "home", user.uid, user.gid)
        door = base / "home" / "door"
        for folder in (door / "ro", door / "none" / "inside"):
            folder.mkdir(parents=True)
            for n in range(3):
                (folder / f"f{n}").write_text("x")
        # Just past the depth one walk enters, a folder that cannot be moved as it is.
        deep = door / "deep"
        deep.mkdir()
        fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(nofollow.MAX_DEPTH + 1):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.close(fd)
        for made in (door, *door.rglob("*")):
            os.chown(made, user.uid, user.gid)
        os.chmod(deeper_path(deep, nofollow.MAX_DEPTH + 1), 0o500)
        os.chmod(door / "ro", 0o555)
        os.chmod(door / "none" / "inside", 0o000)
        os.chmod(door / "none", 0o000)
        os.chmod(door, 0o000)  # the sandbox's mount's root: it may lock that too
        (base / "roots").mkdir()
        (base / "roots" / "keep").write_text("root's")
        code = ("import sys; from sandboxapp.fs import nofollow; "
                "print(nofollow.clear_user_dir(sys.argv[1], 4321), "
                "nofollow.clear_user_dir(sys.argv[2], 4321))")
        result = subprocess.run(
            ["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", sys.executable,
             "-c", code, str(door), str(base / "roots")],
            capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2])
        assert result.stdout.split() == ["True", "True"], result.stderr
        assert not door.exists()
        assert (base / "roots" / "keep").read_text() == "root's"
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=True)


def deeper_path(top: Path, depth: int) -> Path:
    return top.joinpath(*["d"] * depth)
