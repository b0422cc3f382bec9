"""What a sandbox saves through the file chooser reaches the user as a copy of their own
(host/saving.py): the sandbox writes in a directory of the request's, as hostile as it likes,
and nothing it keeps there, or keeps open, reaches what the user gets."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path, PurePosixPath

from sandboxapp.fs import nofollow
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host.portal import read_ask
from sandboxapp.host.saving import Saves

ME = DesktopUser(os.getuid(), os.getgid())


def saves_for(tmp_path: Path, user: DesktopUser = ME) -> tuple[Saves, list[str]]:
    warned: list[str] = []
    return Saves(tmp_path / "saving", user, warned.append), warned


def ask_save(saves: Saves, target: Path, *, replace: bool = True) -> Path:
    """A request answered: the directory where the sandbox writes target's name."""
    return saves.directory_for(target.name, target, replace=replace)


def test_a_saved_file_is_the_users_own_whatever_the_sandbox_keeps_of_it(
        tmp_path: Path) -> None:
    """A descriptor the sandbox keeps open for writing would let it write the user's file
    after the save: the user gets a copy of their own (and so where it made a hard link to
    its file: see the sparse file's test)."""
    chosen = tmp_path / "docs" / "report.txt"
    chosen.parent.mkdir()
    saves, warned = saves_for(tmp_path)
    directory = ask_save(saves, chosen)
    with open(directory / "report.txt", "w") as kept:
        kept.write("v1")
        kept.flush()
        saves.close()
        kept.write(" and more, written after the save")
    assert chosen.read_text() == "v1" and chosen.stat().st_nlink == 1
    assert os.listdir(chosen.parent) == ["report.txt"] and warned == []
    assert not directory.exists()  # the sandbox's own files went with it


def test_a_saved_folder_is_a_copy_with_files_and_folders_only_that_the_sandbox_cannot_reach(
        tmp_path: Path) -> None:
    """"Web page, complete": the folder beside the page comes along, with its files and
    folders; a symlink or a FIFO in it does not, and what the sandbox creates through a
    descriptor of the folder it kept, after the save, never appears in the user's."""
    chosen = tmp_path / "docs" / "page.html"
    chosen.parent.mkdir()
    (tmp_path / "secret").write_text("the user's")
    saves, warned = saves_for(tmp_path)
    directory = ask_save(saves, chosen)
    files = directory / "page_files"
    (files / "img").mkdir(parents=True)
    (files / "img" / "logo.png").write_bytes(b"png")
    (files / "style.css").write_text("css")
    (files / "index.html").symlink_to(tmp_path / "secret")
    os.mkfifo(files / "pipe")
    (directory / "page.html").write_text("<html>")
    kept = os.open(files, os.O_RDONLY | os.O_DIRECTORY)
    try:
        saves.close()
        with contextlib.suppress(FileNotFoundError):  # where its folder is gone already
            os.symlink(tmp_path / "secret", "late.html", dir_fd=kept)
            os.close(os.open("late.txt", os.O_CREAT | os.O_WRONLY, dir_fd=kept))
    finally:
        os.close(kept)
    copied = chosen.parent / "page_files"
    assert chosen.read_text() == "<html>"
    assert sorted(str(p.relative_to(copied)) for p in copied.rglob("*")) == [
        "img", "img/logo.png", "style.css"]
    assert (copied / "img" / "logo.png").read_bytes() == b"png" and warned == []


def test_a_save_nested_thousands_deep_is_saved_in_part_and_the_watching_goes_on(
        tmp_path: Path) -> None:
    """A folder deeper than Python recurses stops neither the saves nor the launch's end:
    the page is saved, its folder as deep as a copy goes, and the user is told."""
    chosen = tmp_path / "docs" / "page.html"
    chosen.parent.mkdir()
    saves, warned = saves_for(tmp_path)
    directory = ask_save(saves, chosen)
    (directory / "page_files").mkdir()
    fd = os.open(directory / "page_files", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)
    (directory / "page.html").write_text("<html>")
    try:
        saves.close()
        assert chosen.read_text() == "<html>"
        assert (chosen.parent / "page_files" / "d").is_dir()
        assert any("saved in part" in line for line in warned), warned
        later = tmp_path / "docs" / "later.txt"
        (ask_save(saves, later) / "later.txt").write_text("later")
        saves.close()
        assert later.read_text() == "later"
    finally:  # pytest's own removal of tmp_path recurses, and would fail
        nofollow.clear_user_dir(str(tmp_path / "saving"), os.getuid())


def test_a_sparse_file_with_a_long_name_is_saved_as_the_users_without_its_holes(
        tmp_path: Path) -> None:
    """Root saving for a user: the copy is the user's, whatever the name's length; a file of
    2 GiB that holds a few bytes costs a few bytes (a sparse file of a terabyte would make
    the launcher write a terabyte)."""
    user = DesktopUser(4321, 4321)
    for made in (tmp_path / "docs", tmp_path / "saving"):
        made.mkdir()
        os.chown(made, user.uid, user.gid)
    chosen = tmp_path / "docs" / ("n" * 250 + ".bin")
    saves, warned = saves_for(tmp_path, user)
    written = ask_save(saves, chosen) / chosen.name
    with open(written, "wb") as stream:
        stream.write(b"head")
        stream.truncate(2 << 30)
    os.chown(written, user.uid, user.gid)
    saves.close()
    assert warned == []
    st = chosen.stat()
    assert (st.st_uid, st.st_gid, st.st_size, st.st_nlink) == (4321, 4321, 2 << 30, 1)
    assert st.st_blocks * 512 < 1 << 20
    assert not stat.S_IMODE(st.st_mode) & 0o111
    with open(chosen, "rb") as stream:
        assert stream.read(4) == b"head"


def test_a_file_linked_many_times_is_not_copied_many_times(tmp_path: Path) -> None:
    """A sandbox that writes a file once and links it a thousand times, in the saved page's
    folder or as the saved file itself, must not make the launcher write it a thousand times
    into the user's folder: a file with other links is left out, and the user is told."""
    chosen = tmp_path / "docs" / "page.html"
    chosen.parent.mkdir()
    saves, warned = saves_for(tmp_path)
    directory = ask_save(saves, chosen)
    (directory / "page_files").mkdir()
    (directory / "page_files" / "big").write_bytes(b"x" * 4096)
    for n in range(200):
        os.link(directory / "page_files" / "big", directory / "page_files" / f"link{n}")
    (directory / "page_files" / "own.css").write_text("css")
    (directory / "page.html").write_text("<html>")
    saves.close()
    assert chosen.read_text() == "<html>"
    assert os.listdir(chosen.parent / "page_files") == ["own.css"]
    assert any("saved in part" in line for line in warned), warned
    linked = tmp_path / "docs" / "linked.txt"
    written = ask_save(saves, linked) / "linked.txt"
    written.write_text("once")
    os.link(written, tmp_path / "saving" / "again")
    saves.close()
    assert not linked.exists()
    assert any("other links" in line and str(linked) in line for line in warned), warned


def test_files_a_sandbox_named_never_replace_the_users(tmp_path: Path) -> None:
    """SaveFiles: the user picked a folder, the sandbox named the files. One of the user's
    by that name stays as it was, the sandbox's lands beside it; a hidden name (a home
    folder's .profile) is refused before any dialog."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's notes")
    saves, warned = saves_for(tmp_path)
    (ask_save(saves, folder / "notes.txt", replace=False) / "notes.txt").write_text("sandbox")
    saves.close()
    assert (folder / "notes.txt").read_text() == "the user's notes"
    assert (folder / "notes (2).txt").read_text() == "sandbox" and warned == []
    from dbus_fast import Variant

    for names in ([b".bashrc\0"], [b"ok.txt\0", b"..\0"]):
        ask = read_ask("SaveFiles", "Save", {"files": Variant("aay", names)})
        assert isinstance(ask, str) and "'.'" in ask, ask


def test_a_file_the_user_named_replaces_the_one_there(tmp_path: Path) -> None:
    """SaveFile: the user's dialog asked before it named an existing file."""
    chosen = tmp_path / "report.txt"
    chosen.write_text("old")
    saves, warned = saves_for(tmp_path)
    (ask_save(saves, chosen) / "report.txt").write_text("new")
    deadline = time.monotonic() + 10
    while chosen.read_text() != "new" and time.monotonic() < deadline:
        time.sleep(0.1)  # the watcher copies it while the sandbox runs
    assert chosen.read_text() == "new" and warned == []
    saves.close()


def test_a_sandbox_that_asks_without_end_is_refused_without_filling_the_log() -> None:
    """Each refused request (the user is elsewhere) would be a line on the terminal and in
    the run log: a sandbox asking a thousand times gets a thousand refusals and one line."""
    from sandboxapp.host.chooser import Choice
    from sandboxapp.host.portal import Ask, FileChooserPortal

    warned: list[str] = []
    shown: list[Ask] = []

    def choose(ask: Ask, _: object) -> Choice:
        shown.append(ask)
        return Choice(1)

    def nowhere(path: Path, *_: object) -> PurePosixPath:
        raise AssertionError(f"nothing is handed or saved: {path}")

    portal = FileChooserPortal(Path("/nonexistent"), "app", choose=choose, hand=nowhere,
                               save_to=nowhere, focused=lambda: False, warn=warned.append)
    ask = Ask("open", "Open", multiple=False, current_name=None)
    answers = {portal._dialog(ask)[0] for _ in range(1000)}
    assert answers == {2} and shown == []
    assert warned == ["app asked for a file dialog while you were elsewhere: refused"]


def test_a_request_of_a_hundred_megabytes_costs_what_is_kept_of_it() -> None:
    """A title or a name is cut to what is shown before it is looked at: a sandbox's request
    of a hundred megabytes of text does not take the launcher's memory."""
    import tracemalloc

    from dbus_fast import Variant

    huge = "\u0100" * (10 << 20)
    tracemalloc.start()
    try:
        ask = read_ask("SaveFile", huge, {"current_name": Variant("s", huge)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not isinstance(ask, str) and len(ask.title) == 200
    assert ask.current_name is not None and len(ask.current_name) == 255
    assert peak < 1 << 20, peak
