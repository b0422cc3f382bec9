"""Unit tests of the pure parts: UID blocks, archive layout, displays, nspawn command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.host.display import Display, parse_display
from sandboxapp.image.debian import mirror_from_sources, security_mirror, sources_list
from sandboxapp.image.store import ImageMeta
from sandboxapp.system.hostfacts import HostFacts
from sandboxapp.system.nspawn import Bind, LaunchSpec, launch_argv, shift_ownership_argv
from sandboxapp.system.uidrange import (
    BLOCK_SIZE,
    END,
    FIRST_BASE,
    SLOTS,
    UidRange,
    allocate,
    ids_in_use_on_host,
    preferred_slot,
)

NO_SYSTEMD = HostFacts(systemd_running=False)
WITH_SYSTEMD = HostFacts(systemd_running=True)


def test_uid_block_is_deterministic_aligned_and_in_our_region() -> None:
    first = allocate("firefox", [])
    assert first == allocate("firefox", [])
    assert first.base % BLOCK_SIZE == 0
    assert first.base >= FIRST_BASE and first.last < END
    assert first.count == 65536


def test_uid_blocks_are_never_shared() -> None:
    taken: set[int] = set()
    for index in range(300):
        block = allocate(f"app{index}", taken)
        assert block.base not in taken
        taken.add(block.base)


def test_a_taken_preferred_block_moves_to_the_next_free_one() -> None:
    preferred = allocate("firefox", [])
    moved = allocate("firefox", [preferred.base])
    assert preferred.base == FIRST_BASE + preferred_slot("firefox") * BLOCK_SIZE
    # The next one along (wrapping round at the region's end), which no host account has here.
    following = FIRST_BASE + (preferred_slot("firefox") + 1) % SLOTS * BLOCK_SIZE
    assert not any(following <= i < following + BLOCK_SIZE for i in ids_in_use_on_host())
    assert moved.base == following


def test_security_archive_is_derived_from_a_debian_layout_mirror() -> None:
    assert security_mirror("http://mirror.example/debian") == "http://mirror.example/debian-security"
    assert security_mirror("http://mirror.example/debian/") == "http://mirror.example/debian-security"
    assert security_mirror("file:///srv/repo") is None
    assert security_mirror("http://mirror.example/ubuntu") is None


def test_sources_list_has_updates_and_security_for_stable_suites_only() -> None:
    stable = sources_list("bookworm", "http://m/debian", "http://m/debian-security")
    assert stable.splitlines() == [
        "deb http://m/debian bookworm main",
        "deb http://m/debian bookworm-updates main",
        "deb http://m/debian-security bookworm-security main",
    ]
    assert sources_list("sid", "http://m/debian", "http://m/debian-security").splitlines() == [
        "deb http://m/debian sid main"
    ]


def test_mirror_is_read_from_what_debootstrap_wrote() -> None:
    assert mirror_from_sources("# c\ndeb http://m/debian bookworm main\n") == "http://m/debian"
    assert mirror_from_sources("") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(":0", Display(0)), (":0.0", Display(0)), ("unix:0", Display(0)), (":12.1", Display(12, 1)),
     ("unix:3.2", Display(3, 2))],
)
def test_local_display_forms(value: str, expected: Display) -> None:
    assert parse_display(value) == expected


def test_display_socket_and_name() -> None:
    assert parse_display("unix:7.0").socket == Path("/tmp/.X11-unix/X7")
    assert parse_display("unix:7.0").name == ":7"


@pytest.mark.parametrize("value", ["", None, "localhost:10.0", "host.example:0", "0", ":x"])
def test_unusable_displays_are_launcher_errors(value: str | None) -> None:
    with pytest.raises(SandboxError) as info:
        parse_display(value)
    assert info.value.status == 125


def spec(**changes: object) -> LaunchSpec:
    values: dict[str, object] = dict(
        rootfs=Path("/layers/app/merged"),
        machine="sandboxapp-app",
        ids=UidRange(0x70010000),
        private_network=True,
        binds=(),
        env=(("DISPLAY", ":0"),),
        command=("xeyes", "-fg", "red"),
    )
    values.update(changes)
    return LaunchSpec(**values)  # type: ignore[arg-type]


def test_launch_argv_uses_the_image_block_without_ownership_options() -> None:
    argv = launch_argv(spec(), NO_SYSTEMD)
    assert argv[0] == "systemd-nspawn"
    assert f"--private-users={0x70010000}:65536" in argv
    assert not any(a.startswith("--private-users-ownership") for a in argv)
    assert "--register=no" in argv and "--keep-unit" in argv
    assert "--private-network" in argv
    assert argv[-5:] == ["--as-pid2", "--", "xeyes", "-fg", "red"]
    assert "--setenv=DISPLAY=:0" in argv


def test_launch_argv_registers_with_machined_where_systemd_runs() -> None:
    argv = launch_argv(spec(private_network=False), WITH_SYSTEMD)
    assert "--register=no" not in argv
    assert "--private-network" not in argv


def test_binds_escape_colons_and_mark_rootidmap() -> None:
    persist = Bind(Path("/home/u/a:b"), "/root/data", read_only=False, root_idmap=True)
    assert persist.to_arg() == "--bind=/home/u/a\\:b:/root/data:rootidmap"
    assert Bind(Path("/tmp/.X11-unix/X0"), "/tmp/.X11-unix/X0").to_arg() == (
        "--bind-ro=/tmp/.X11-unix/X0:/tmp/.X11-unix/X0"
    )


def test_command_words_cannot_become_nspawn_options() -> None:
    argv = launch_argv(spec(command=("--bind=/:/host",)), NO_SYSTEMD)
    assert argv.index("--") < argv.index("--bind=/:/host")


def test_shift_ownership_runs_nspawn_chown_once() -> None:
    argv = shift_ownership_argv(Path("/img/rootfs"), UidRange(0x70020000), NO_SYSTEMD)
    assert "--private-users-ownership=chown" in argv
    assert f"--private-users={0x70020000}:65536" in argv


def test_image_metadata_round_trips() -> None:
    meta = ImageMeta(profile="app", uid_base=0x70000000, uid_count=65536, suite="bookworm",
                     packages=("a", "b"), mirror="http://m/debian", security=None,
                     spec_digest="abc", built_at="2026-01-01T00:00:00+00:00", size_bytes=10)
    assert ImageMeta.from_json(meta.to_json()) == meta


def test_the_parser_for_one_command_parses_it_as_the_whole_one_does() -> None:
    from sandboxapp.cli import COMMANDS, build_parser

    for words in (["run", "--dry-run", "firefox", "--", "https://example.org"],
                  ["image", "update", "--all"], ["stop", "--timeout", "3", "xeyes"]):
        assert vars(build_parser(words[0]).parse_args(words)) == vars(
            build_parser().parse_args(words))
    assert set(COMMANDS) == {"list", "run", "ps", "stop", "reset", "doctor", "shell",
                             "cleanup", "setup", "desktop", "image"}


@pytest.mark.parametrize(("words", "launches"), [
    (["run", "firefox"], True),
    (["run", "--command", "/bin/sh", "firefox", "--", "-c", "true"], True),
    (["run", "firefox", "--", "--help"], True),  # the program's own option
    (["run", "--dry-run", "firefox"], False),
    (["run", "firefox", "--dry-run"], False),  # in doubt: argparse decides, later
    (["run", "--help"], False),
    (["ps"], False),
    ([], False),
])
def test_a_desktop_users_helper_starts_first_only_for_a_real_launch(
        words: list[str], launches: bool) -> None:
    from sandboxapp.cli import starts_a_launch

    assert starts_a_launch(words) is launches
