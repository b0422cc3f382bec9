"""The pure parts of prestarting: what a ticket is filed and checked under, and which ticket
files are read at all."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from sandboxapp import prestart

WORDS = ["firefox", "--", "https://example.org"]
ENV = {"DISPLAY": ":0", "HOME": "/root"}


def test_a_ticket_is_filed_under_its_words(tmp_path: Path) -> None:
    path = prestart.ticket_path(str(tmp_path), WORDS)
    assert path == prestart.ticket_path(str(tmp_path), list(WORDS))
    assert path != prestart.ticket_path(str(tmp_path), [*WORDS, "x"])
    assert path != prestart.ticket_path(str(tmp_path), ["firefox", "-- https://example.org"])
    assert os.path.dirname(path) == str(tmp_path / "tickets")


def test_the_key_changes_with_words_environment_directory_and_files(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text("a")
    watched = [str(profile), str(tmp_path / "missing")]
    key = prestart.launch_key(WORDS, ENV, watched)
    assert key == prestart.launch_key(list(WORDS), dict(ENV), watched)
    assert key != prestart.launch_key([*WORDS, "x"], ENV, watched)
    assert key != prestart.launch_key(WORDS, {**ENV, "DISPLAY": ":1"}, watched)
    assert key != prestart.launch_key(WORDS, {**ENV, "XDG_DATA_HOME": "/srv"}, watched)
    # A terminal's own variables do not cost a launch its ticket.
    assert key == prestart.launch_key(WORDS, {**ENV, "OLDPWD": "/tmp", "SHLVL": "2"}, watched)
    profile.write_text("ab")
    assert key != prestart.launch_key(WORDS, ENV, watched)
    key = prestart.launch_key(WORDS, ENV, watched)
    (tmp_path / "missing").write_text("")
    assert key != prestart.launch_key(WORDS, ENV, watched)
    key = prestart.launch_key(WORDS, ENV, watched)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert key != prestart.launch_key(WORDS, ENV, watched)
    finally:
        os.chdir(cwd)


def _file_ticket(tmp_path: Path, **changes: object) -> str:
    path = prestart.ticket_path(str(tmp_path), WORDS)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    ticket = {"version": prestart.TICKET_VERSION, "key": (), **changes}
    Path(path).write_bytes(marshal.dumps(ticket))
    return path


def test_only_a_ticket_that_root_alone_can_write_is_read(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = _file_ticket(tmp_path)
    assert prestart.read_ticket(path)["version"] == prestart.TICKET_VERSION
    os.chmod(path, 0o664)
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(path)
    os.chmod(path, 0o644)
    os.chown(path, 4321, 4321)
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(path)
    os.chown(path, 0, 0)
    os.chmod(os.path.dirname(path), 0o777)
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(path)


def test_tickets_of_another_version_or_none_at_all_are_not_used(tmp_path: Path) -> None:
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(prestart.ticket_path(str(tmp_path), WORDS))
    path = _file_ticket(tmp_path, version=prestart.TICKET_VERSION + 1)
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(path)
    Path(path).write_bytes(b"\x00garbage")
    with pytest.raises(prestart.NotPrestarted):
        prestart.read_ticket(path)


def test_a_launch_without_its_ticket_is_not_prestarted(tmp_path: Path) -> None:
    assert prestart.attempt(WORDS, {"SANDBOXAPP_RUN_DIR": str(tmp_path)}) is None


def test_only_the_newest_tickets_are_kept(tmp_path: Path) -> None:
    for index in range(prestart.MAX_TICKETS + 5):
        path = prestart.ticket_path(str(tmp_path), [str(index)])
        prestart.write_ticket(path, {"version": prestart.TICKET_VERSION})
        os.utime(path, (index, index))
    kept = set(os.listdir(tmp_path / "tickets"))
    assert len(kept) == prestart.MAX_TICKETS
    assert os.path.basename(prestart.ticket_path(str(tmp_path), ["0"])) not in kept
    newest = prestart.ticket_path(str(tmp_path), [str(prestart.MAX_TICKETS + 4)])
    assert os.path.basename(newest) in kept
