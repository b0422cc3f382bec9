"""The container spec of a launch (plan.py: launch_spec, from the grants in features/),
the one root's launch and the privileged helper both execute: what the container sees, worked
out from the profile, the image, the host's facts and the user, before anything is made."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import Any

from sandboxapp.features import features_for
from sandboxapp.features.display import X11_CONTAINER_DIR
from sandboxapp.features.sound import PULSE_DIR
from sandboxapp.features.spec import GATE, launch_spec
from sandboxapp.host.sound import SoundPaths
from sandboxapp.plan import LaunchPlan
from sandboxapp.system.handed import FILES_CONTAINER_DIR
from sandboxapp.system.hostfacts import HostFacts
from sandboxapp.system.nspawn import LaunchSpec, launch_argv
from tests.unit.plans import BASE, grants
from tests.unit.plans import make_plan as _plan


def _spec(plan: LaunchPlan, *, sound: SoundPaths | None = None, x11_dir: Path | None = None,
          staged: dict[Path, Path] | None = None, rootfs: Path = Path("/layer/merged"),
          gate: Path = Path("/layer/gate")) -> LaunchSpec:
    features = features_for(plan, grants(plan, x11_dir=x11_dir,
                                         sound_dir=sound.dir if sound else None))
    return launch_spec(plan, rootfs, features, gate=gate, files=rootfs.parent / "files",
                       staged=staged)


def _binds(plan: LaunchPlan, **kwargs: Any) -> dict[str, tuple[Path, bool, bool]]:
    spec = _spec(plan, **kwargs)
    return {b.container: (b.host, b.read_only, b.root_idmap) for b in spec.binds}


def test_the_spec_binds_only_what_the_profile_grants(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"x11": True, "pulseaudio": True, "persist": ["/root/.app"],
                            "network": "none"})
    sound = SoundPaths(tmp_path / "sound")
    binds = _binds(plan, sound=sound, x11_dir=tmp_path / "x11dir")
    assert binds == {
        # The user's persistent directory, writable, the container root's own inside.
        "/root/.app": (tmp_path / "data" / "sandboxapp" / "app" / "root" / ".app", False, True),
        # The display's own socket, not its directory; the X and sound directories read-only.
        "/tmp/.X11-unix/X7": (Path("/tmp/.X11-unix/X7"), True, False),
        str(X11_CONTAINER_DIR): (tmp_path / "x11dir", True, True),
        str(PULSE_DIR): (sound.dir, True, False),
        GATE: (Path("/layer/gate"), True, False),
        # Where files handed to the running sandbox appear, one by one (system/handed.py).
        str(FILES_CONTAINER_DIR): (Path("/layer/files"), True, False),
    }
    spec = _spec(plan, sound=sound, x11_dir=tmp_path / "x11dir")
    env = dict(spec.env)
    assert env["DISPLAY"] == ":7"
    assert env["XAUTHORITY"] == str(X11_CONTAINER_DIR / "Xauthority")
    assert env["PULSE_SERVER"] == f"unix:{PULSE_DIR / 'native'}"
    assert spec.private_network and spec.ids.base == BASE
    argv = launch_argv(spec, HostFacts(systemd_running=False))
    assert f"--private-users={BASE}:65536" in argv and "--private-network" in argv
    # The app waits at the gate: its command comes last, after the gate's shell.
    assert argv[-2:] == ["/usr/bin/app", "--flag"]


def test_without_grants_the_spec_has_no_display_sound_or_network_of_its_own(
        tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"x11": False, "pulseaudio": False, "network": "host"})
    binds = _binds(plan, sound=None, x11_dir=None)
    assert list(binds) == [GATE, str(FILES_CONTAINER_DIR)]
    spec = _spec(plan)
    assert not spec.private_network
    assert not {"DISPLAY", "XAUTHORITY", "PULSE_SERVER"} & set(dict(spec.env))


def test_staged_paths_replace_every_user_path_the_container_sees(tmp_path: Path) -> None:
    """The root side bind-mounts each checked path into the layer first: nspawn is given those,
    never a path the user could swap meanwhile."""
    plan = _plan(tmp_path, {"x11": True, "pulseaudio": True, "persist": ["/root/.app"]})
    sound = SoundPaths(tmp_path / "sound")
    user_paths = [plan.persist[0].host, plan.display.socket if plan.display else None,
                  tmp_path / "x11dir", sound.dir]
    staged = {path: Path(f"/layer/binds/{index}") for index, path in enumerate(user_paths)
              if path is not None}
    binds = _binds(plan, sound=sound, x11_dir=tmp_path / "x11dir", staged=staged)
    assert {host for host, _, _ in binds.values()} == {*staged.values(), Path("/layer/gate"),
                                                      Path("/layer/files")}


def test_command_and_arguments(tmp_path: Path) -> None:
    appended = _plan(tmp_path, {}, extra=("one", "two"))
    assert appended.command == ("/usr/bin/app", "--flag", "one", "two")
    assert appended.extra_args == ("one", "two")
    replaced = _plan(tmp_path / "b", {}, extra=("-c", "true"), program="/bin/sh")
    assert replaced.command == ("/bin/sh", "-c", "true")
    assert replaced.extra_args == ("-c", "true")
    spec = _spec(replaced, rootfs=Path("/m"), gate=Path("/g"))
    assert spec.command[-3:] == ("/bin/sh", "-c", "true")


def test_a_users_instance_has_a_layer_and_machine_of_its_own(tmp_path: Path) -> None:
    roots = _plan(tmp_path, {})
    users = _plan(tmp_path / "u", {}, instance="u1000")
    assert roots.machine == "sandboxapp-app" and users.machine == "sandboxapp-app-u1000"
    assert users.layer_root.name == "app@u1000" and roots.layer_root.name == "app"
    assert PurePosixPath(str(users.layer_root)).parent.name == ".layers"


def test_files_named_on_the_command_line_become_their_paths_inside(tmp_path: Path) -> None:
    """A local file (a path or a file:// URL) is replaced by its path inside, in the order the
    root side binds them; options, other URLs and missing files pass as they are; a running
    sandbox's own numbering replaces the planned one."""
    from sandboxapp.plan import hand_arguments, with_handed_at

    (tmp_path / "a b.pdf").write_text("a")
    (tmp_path / "c.txt").write_text("c")
    args, handed = hand_arguments([
        str(tmp_path / "a b.pdf"), "--new-tab", f"file://{tmp_path}/c.txt",
        "https://example.org/x.pdf", str(tmp_path / "missing.pdf"), f"-x={tmp_path}/c.txt"])
    assert args == ["/run/sandboxapp/files/1/a b.pdf", "--new-tab",
                    "file:///run/sandboxapp/files/2/c.txt", "https://example.org/x.pdf",
                    str(tmp_path / "missing.pdf"), f"-x={tmp_path}/c.txt"]
    assert [h.host for h in handed] == [tmp_path / "a b.pdf", tmp_path / "c.txt"]
    plan = dataclasses.replace(_plan(tmp_path / "p", {}, extra=tuple(args)), handed=handed)
    moved = with_handed_at(plan, [PurePosixPath("/run/sandboxapp/files/7/a b.pdf"),
                                  PurePosixPath("/run/sandboxapp/files/8/c.txt")])
    assert moved.extra_args[:3] == ("/run/sandboxapp/files/7/a b.pdf", "--new-tab",
                                    "file:///run/sandboxapp/files/8/c.txt")


def test_words_that_are_no_file_pass_and_a_name_that_is_not_utf8_is_refused(
        tmp_path: Path) -> None:
    import pytest

    from sandboxapp.errors import ExitStatus, SandboxError
    from sandboxapp.plan import hand_arguments

    long_url = "https://example.org/?q=" + "y" * 5000
    assert hand_arguments([long_url, "y" * 300]) == ([long_url, "y" * 300], ())
    bad = tmp_path / os.fsdecode(b"bad\xff.txt")
    bad.write_text("x")
    with pytest.raises(SandboxError) as raised:
        hand_arguments([str(bad)])
    assert "not UTF-8" in raised.value.message and raised.value.status == ExitStatus.USAGE
