"""The launch record (undo/ledger.py) and its typed entries (undo/entries.py), without root:
what is written, what a record on disk loads as, what a damaged one becomes, and that undo
runs newest first and keeps what it cannot undo."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.launch.recovery import reconcile, undo_record
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.undo.entries import (
    ContainerEntry,
    LayerEntry,
    NestedX11Entry,
    SoundEntry,
    TrustedX11Entry,
    UnknownEntry,
    entry_from_json,
)
from sandboxapp.undo.ledger import Record, RunDir

# A launch record as it is written, kinds and fields by name (the on-disk format).
OLD_ENTRIES = [
    {"id": 1, "kind": "x11-nested", "dir": "/run/user/1000/sandboxapp/.x11/app", "user": 1000,
     "display": 20, "server": [412, 9000]},
    {"id": 2, "kind": "sound", "socket": "/run/user/1000/sandboxapp/app/native",
     "dir": "/run/user/1000/sandboxapp/app", "user": 1000},
    {"id": 3, "kind": "layer", "path": "/var/lib/sandboxapp/images/.layers/app"},
    {"id": 4, "kind": "container", "machine": "sandboxapp-app", "pid": 4242,
     "started": 123.0, "uid": 0x70040000, "user": 1000, "profile_file": "/p/app.toml"},
    {"id": 5, "kind": "x11", "dir": "/run/user/1000/sandboxapp/.x11/app", "user": 1000,
     "display": 7, "xauthority": "/home/u/.Xauthority", "authid": 5, "server": [400, 8000]},
]


def _run_dir(tmp_path: Path) -> RunDir:
    root = tmp_path / "run"
    root.mkdir(mode=0o700)
    return RunDir(root)


def test_a_record_loads_as_typed_entries_and_is_written_back_the_same(
        tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"version": 1, "profile": "app", "pid": 1, "started": 2.0,
                                "next_id": 6, "entries": OLD_ENTRIES}))
    record = Record.load(path)
    assert record is not None
    assert [type(e) for e in record.entries] == [NestedX11Entry, SoundEntry, LayerEntry,
                                                 ContainerEntry, TrustedX11Entry]
    nested = record.entries[0]
    assert isinstance(nested, NestedX11Entry) and nested.display == 20
    assert nested.server == [412, 9000]
    assert record.containers()[0].pid == 4242
    record.save()
    assert json.loads(path.read_text())["entries"] == OLD_ENTRIES


@pytest.mark.parametrize("data", [
    {"id": 1, "kind": "layer"},  # a field missing
    {"id": 1, "kind": "layer", "path": 5},  # of the wrong type
    {"id": 1, "kind": "container", "machine": "m", "uid": "0", "user": 1, "profile_file": "p"},
    {"id": 1, "kind": "x11-nested", "dir": "/d", "user": 1, "display": "7"},
    {"id": 1, "kind": "layer", "path": "/x", "extra": 1},  # a field no entry has
    {"id": 1, "kind": "tunnel", "path": "/x"},  # a kind this release does not know
])
def test_an_entry_that_is_not_what_its_kind_says_is_kept_and_never_undone(
        data: dict[str, object]) -> None:
    entry = entry_from_json(data)
    assert isinstance(entry, UnknownEntry)
    with pytest.raises(SandboxError, match="unknown ledger entry kind"):
        entry.undo(recovering=True)
    assert entry.to_json() == data  # written back as it was found


def test_undo_runs_newest_first_and_keeps_what_it_cannot_undo(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    record = Record(run_dir.record_path("app"), "app", 1, 2.0)
    sound = tmp_path / "sound"
    sound.mkdir()
    (sound / "client.conf").write_text("autospawn = no\n")
    x11_dir = tmp_path / "x11"
    x11_dir.mkdir()
    (x11_dir / "Xauthority").write_bytes(b"cookie")
    record.add(UnknownEntry("tunnel", {"path": "/x"}))
    record.add(SoundEntry(str(sound / "native"), str(sound), os.getuid()))
    record.add(NestedX11Entry(str(x11_dir), os.getuid(), 20))
    assert [e.id for e in record.entries] == [1, 2, 3]
    problems = undo_record(record, recovering=False)
    assert not sound.exists() and not x11_dir.exists()
    assert problems == ["app: could not undo tunnel: unknown ledger entry kind 'tunnel'"]
    kept = Record.load(record.path)
    assert kept is not None and [e.to_json()["kind"] for e in kept.entries] == ["tunnel"]


def test_reconcile_undoes_the_record_of_a_launcher_that_is_gone(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    empty = tmp_path / "sound"
    empty.mkdir()
    # pid 1, recorded with a start no process has: a launcher long gone, its pid reused.
    record = Record(run_dir.record_path("app"), "app", 1, -1.0)
    record.add(SoundEntry(str(empty / "native"), str(empty), os.getuid()))
    messages = reconcile(run_dir)
    assert messages == ["cleaned up after app (launcher pid 1 is gone): sound"]
    assert not empty.exists() and not record.path.exists()


def test_a_grant_recorded_through_the_supervisor_is_undone_when_the_launch_ends(
        tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    warnings: list[str] = []
    kept, taken = tmp_path / "kept", tmp_path / "taken"
    for directory in (kept, taken):
        directory.mkdir()
    supervisor = Supervisor(run_dir, warnings.append)
    with ExitStack() as stack:
        assert supervisor.begin(stack, "app")
        assert supervisor.record is not None
        on_disk = json.loads(supervisor.record.path.read_text())
        assert on_disk["entries"] == []
        mine = supervisor.add(stack, SoundEntry(str(taken / "native"), str(taken), os.getuid()))
        theirs = supervisor.add(stack, SoundEntry(str(kept / "native"), str(kept), os.getuid()))
        # Recorded before it is made, on disk at once.
        on_disk = json.loads(supervisor.record.path.read_text())
        assert [e["dir"] for e in on_disk["entries"]] == [str(taken), str(kept)]
        supervisor.record.update(mine, dir=str(taken))
        # A grant that turned out to be the user's own is dropped, and stays.
        supervisor.record.drop(theirs)
        with pytest.raises(AttributeError):
            supervisor.record.update(mine, nosuchfield=1)
    assert not taken.exists() and kept.exists()
    assert not run_dir.record_path("app").exists() and warnings == []


def test_the_sound_directorys_undo_never_follows_a_symlink_put_in_its_place(
        tmp_path: Path) -> None:
    """A user who swaps the sandbox's sound directory for a symlink to one of root's before
    the launch ends: the undo removes nothing there."""
    roots = tmp_path / "roots"
    roots.mkdir()
    for name in ("client.conf", "native"):
        (roots / name).write_text("root's")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4321, 4321)
    sound = home / "sound"
    sound.symlink_to(roots)
    os.lchown(sound, 4321, 4321)  # the user's own symlink, in the user's own directory
    SoundEntry(str(sound / "native"), str(sound), 4321).undo(recovering=False)
    assert sorted(p.name for p in roots.iterdir()) == ["client.conf", "native"]


def test_an_undo_that_fails_unexpectedly_is_reported_and_the_others_are_undone(
        tmp_path: Path) -> None:
    """Whatever one undo raises (a bug, a sandbox's hostile leftovers), the launch's other
    grants are taken back, and the entry stays for 'sandboxapp cleanup'."""
    from dataclasses import dataclass

    from sandboxapp.undo.entries import Entry

    @dataclass
    class Broken(Entry):
        KIND = "broken"

        def undo(self, *, recovering: bool) -> None:
            raise RecursionError("maximum recursion depth exceeded")

    run_dir = _run_dir(tmp_path)
    record = Record(run_dir.record_path("app"), "app", 1, 2.0)
    sound = tmp_path / "sound"
    sound.mkdir()
    record.add(SoundEntry(str(sound / "native"), str(sound), os.getuid()))
    record.add(Broken())
    problems = undo_record(record, recovering=False)
    assert not sound.exists()
    assert problems == ["app: could not undo broken: RecursionError: maximum recursion depth "
                        "exceeded"]
    warnings: list[str] = []
    (tmp_path / "second").mkdir()
    supervisor = Supervisor(_run_dir(tmp_path / "second"), warn=warnings.append)
    with ExitStack() as stack:
        assert supervisor.begin(stack, "other")
        supervisor.add(stack, Broken())
    assert warnings == ["could not undo broken: RecursionError: maximum recursion depth "
                        "exceeded; 'sandboxapp cleanup' tries again"]
