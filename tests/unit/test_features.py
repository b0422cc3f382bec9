"""The grants as features (sandboxapp/features/), without root: what the session side makes
before nspawn starts and records first, what it hands the helper, and that the helper's
features, rebuilt from that request, give the container the very same binds and environment."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import Feature, Session, features_for, grants_of, prepare_features
from sandboxapp.features.container import SESSION_BUS, SessionBus
from sandboxapp.features.display import DisplayAccess
from sandboxapp.features.files import ReadOnlyBinds
from sandboxapp.features.quit import SessionManagement
from sandboxapp.features.request import Action, HelperRequest
from sandboxapp.features.sound import PULSE_CLIENT_CONF_TEXT, SoundAccess
from sandboxapp.features.spec import GATE_WRAPPER, describe_plan, launch_spec
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host import display as display_module
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.plan import LaunchPlan
from sandboxapp.system.hostfacts import HostFacts
from sandboxapp.undo.entries import SoundEntry
from sandboxapp.undo.ledger import RunDir
from tests.unit.plans import grants, make_plan

FULL = {"x11": True, "pulseaudio": True, "persist": ["/root/.app"], "network": "none"}
# The session side's display, prepared without an X server (x11 = true starts a nested one:
# tests/integration/test_nested_display.py and the launches).
PREPARED = {**FULL, "x11": "trusted"}


@pytest.fixture
def sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory for the X sockets (in place of /tmp/.X11-unix) and a listening sound
    server socket in it."""
    x_dir = tmp_path / "x11-unix"
    x_dir.mkdir()
    monkeypatch.setattr(display_module, "X11_SOCKET_DIR", x_dir)
    listeners = []
    for path in (x_dir / "X7", tmp_path / "pulse-native"):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen()
        listeners.append(listener)
    yield tmp_path
    for listener in listeners:
        listener.close()


class Launching:
    """The session side's context for a plan, its record begun (no root, no container)."""

    def __init__(self, tmp_path: Path, plan: LaunchPlan, environ: dict[str, str]) -> None:
        self.warnings: list[str] = []
        run_dir = tmp_path / "run"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        self.supervisor = Supervisor(RunDir(run_dir), self.warnings.append)
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        self.session = Session(plan, DesktopUser(os.getuid(), os.getgid()),
                               {"XDG_RUNTIME_DIR": str(runtime), **environ}, self.supervisor,
                               self.warnings.append, run_dir)
        self.stack = ExitStack()
        assert self.supervisor.begin(self.stack, plan.profile.name)

    def kinds(self) -> list[str]:
        assert self.supervisor.record is not None
        return [entry.to_json()["kind"] for entry in self.supervisor.record.entries]


def _sound_env(root: Path) -> dict[str, str]:
    return {"PULSE_SERVER": f"unix:{root / 'pulse-native'}"}


def _view(features: tuple[Feature, ...], plan: LaunchPlan) -> tuple[object, ...]:
    spec = launch_spec(plan, Path("/layer/merged"), features, gate=Path("/layer/gate"),
                       files=Path("/layer/files"))
    return (spec.binds, spec.env, spec.command, spec.private_network,
            [path for f in features for path in f.checked_paths(False)])


def test_the_helper_rebuilds_from_the_request_what_the_session_side_prepared(
        tmp_path: Path, sockets: Path) -> None:
    plan = make_plan(tmp_path, {**PREPARED, "session_bus": True})
    launching = Launching(tmp_path, plan, _sound_env(sockets))
    with launching.stack:
        prepared = prepare_features(launching.session, launching.stack)
        assert [type(f).__name__ for f in prepared] == [
            "PersistentDirs", "ReadOnlyBinds", "DisplayAccess", "SoundAccess",
            "SessionManagement", "SessionBus", "NetworkAccess"]
        request = HelperRequest(Action.LAUNCH, "app", Path("/p/app.toml"), Path("/d"),
                                grants=grants_of(prepared))
        parsed = HelperRequest.from_json(request.to_json())
        assert parsed == request and parsed.grants["display"]["display"] == 7
        assert set(parsed.grants) == {"display", "sound", "session_manager"}
        rebuilt = features_for(plan, parsed.grants)
        assert _view(rebuilt, plan) == _view(prepared, plan)


def test_what_the_container_binds_is_made_and_recorded_before_nspawn_starts(
        tmp_path: Path, sockets: Path) -> None:
    plan = make_plan(tmp_path, PREPARED)
    launching = Launching(tmp_path, plan, _sound_env(sockets))
    with launching.stack:
        features = prepare_features(launching.session, launching.stack)
        sound = next(f for f in features if isinstance(f, SoundAccess))
        display = next(f for f in features if isinstance(f, DisplayAccess))
        # The trusted authorization is made later (grant); its directory and undo now.
        assert launching.kinds() == ["x11", "sound", "session-manager"]
        quit = next(f for f in features if isinstance(f, SessionManagement))
        assert stat.S_IMODE(quit.dir.stat().st_mode) == 0o711
        assert stat.S_IMODE(display.x11_dir.stat().st_mode) == 0o700
        assert not any(display.x11_dir.iterdir())
        assert stat.S_IMODE(sound.paths.dir.stat().st_mode) == 0o711
        assert sound.paths.conf.read_text() == PULSE_CLIENT_CONF_TEXT
        assert plan.persist[0].host.is_dir()
        made = (sound.paths.dir, display.x11_dir, quit.dir)
    # Given up before any grant: what was made is gone, and the record with it.
    assert not any(path.exists() for path in made)
    assert launching.kinds() == []


def test_without_a_sound_server_the_sandbox_runs_without_sound(
        tmp_path: Path, sockets: Path) -> None:
    plan = make_plan(tmp_path, {"pulseaudio": True})
    launching = Launching(tmp_path, plan, {"PULSE_SERVER": f"unix:{tmp_path / 'nothing'}"})
    with launching.stack:
        features = prepare_features(launching.session, launching.stack)
        assert not any(isinstance(f, SoundAccess) for f in features)
        assert launching.kinds() == ["session-manager"]
    assert launching.warnings == ["no PulseAudio or PipeWire server found: running without sound"]


def test_a_display_without_its_socket_is_refused_before_anything_is_made(
        tmp_path: Path, sockets: Path) -> None:
    plan = make_plan(tmp_path, FULL, environ={"DISPLAY": ":8"})
    launching = Launching(tmp_path, plan, _sound_env(sockets))
    with launching.stack, pytest.raises(SandboxError, match="has no socket at"):
        DisplayAccess.prepare(launching.session, launching.stack)
    assert launching.kinds() == []


def test_a_missing_read_only_bind_names_the_profile_and_the_path(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"bind_ro": [f"{tmp_path / 'gone'}:/opt/data"]})
    launching = Launching(tmp_path, plan, {})
    with launching.stack, pytest.raises(SandboxError) as raised:
        ReadOnlyBinds.prepare(launching.session, launching.stack)
    assert raised.value.message == (f"{plan.profile.path}: sandbox.bind_ro: {tmp_path / 'gone'} "
                                    "does not exist")


def test_a_users_own_profile_binds_only_what_is_the_users(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    plan = make_plan(tmp_path, {"x11": True, "bind_ro": [f"{tmp_path / 'data'}:/opt/data"]})
    features = features_for(plan, grants(plan, x11_dir=tmp_path / "x"))
    for trusted_profile in (False, True):
        checked = {p.what: p.trusted for f in features for p in f.checked_paths(trusted_profile)}
        # The nested display's socket and the X directory are always the user's own.
        assert checked == {"sandbox.bind_ro": trusted_profile, "X display socket": False,
                           "X directory": False}
    trusted = make_plan(tmp_path / "t", {"x11": "trusted"})
    checked = {p.what: p.trusted for f in features_for(trusted, grants(trusted))
               for p in f.checked_paths(False)}
    # The user's display's socket may be root's; the X directory is the user's own.
    assert checked == {"X display socket": True, "X directory": False}


def test_each_feature_describes_itself_for_a_dry_run(tmp_path: Path) -> None:
    untrusted = describe_plan(make_plan(tmp_path / "u", FULL), HostFacts(systemd_running=False))
    assert "X11:      a display of its own (Xephyr) in a window on :7" in untrusted
    assert "sound:    a socket of its own at /run/sandboxapp/pulse/native" in untrusted
    assert "network:  none" in untrusted and "D-Bus:" not in untrusted
    trusted = describe_plan(make_plan(tmp_path / "t", {"x11": "trusted", "session_bus": True}),
                            HostFacts(systemd_running=False))
    assert 'X11:      TRUSTED (x11 = "trusted"): an authorization of its own on :7' in trusted
    assert "localuser" not in trusted and "sound:    none" in trusted
    assert "XAUTHORITY=/run/sandboxapp/x11/Xauthority" in trusted
    assert "D-Bus:    a session bus of its own inside" in trusted


def test_the_session_bus_starts_inside_the_gate_before_the_app(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"session_bus": True, "network": "host"})
    features = features_for(plan, {})
    assert any(isinstance(f, SessionBus) for f in features)
    spec = launch_spec(plan, Path("/m"), features, gate=Path("/g"), files=Path("/f"))
    assert spec.command[:len(GATE_WRAPPER)] == GATE_WRAPPER
    assert spec.command[-2:] == plan.command
    assert "dbus-daemon --session" in spec.command[len(GATE_WRAPPER) + 2]
    assert ("DBUS_SESSION_BUS_ADDRESS", SESSION_BUS) in spec.env
    assert not spec.private_network


def test_a_sound_entry_is_recorded_before_its_directory_is_made(tmp_path: Path,
                                                                sockets: Path) -> None:
    plan = make_plan(tmp_path, {"pulseaudio": True})
    launching = Launching(tmp_path, plan, _sound_env(sockets))
    with launching.stack:
        SoundAccess.prepare(launching.session, launching.stack)
        record = launching.supervisor.record
        assert record is not None
        (entry,) = record.entries
        assert isinstance(entry, SoundEntry)
        assert Path(entry.dir).is_dir() and Path(entry.socket).parent == Path(entry.dir)
    assert not Path(entry.dir).exists()  # undone with the launch


def test_a_request_reads_back_as_it_was_written() -> None:
    request = HelperRequest(Action.LAUNCH, "app", Path("/p/app.toml"), Path("/home/u/.local"),
                            program="/bin/sh", args=("-c", "--", "--x11-dir=/etc"),
                            downloads=Path("/home/u/Downloads/App (sandbox)"),
                            grants={"display": {"display": 3, "x11_dir": None},
                                    "sound": {"dir": "/run/user/1/sandboxapp/app"}})
    assert HelperRequest.from_json(request.to_json()) == request


GOOD = {"action": "launch", "profile": "app", "profile_file": "/p/app.toml", "data_home": "/d"}


@pytest.mark.parametrize(("change", "said"), [
    ({"profile_file": "app.toml"}, "profile_file is not an absolute path"),
    ({"data_home": "/d/../etc"}, "data_home is not an absolute path without '..'"),
    ({"data_home": "/d/\0x"}, "data_home is not an absolute path without '..' or a NUL"),
    ({"action": "shell"}, "no action 'shell'"),
    ({"data_home": None}, "data_home is not an absolute path"),
    ({"args": "-c"}, "args is not a list of strings"),
    ({"grants": []}, "grants is not an object"),
    ({"extra": 1}, "unknown keys extra"),
    ({"downloads": "Downloads"}, "downloads is not an absolute path"),
])
def test_a_malformed_request_is_refused_in_a_line(change: dict[str, object], said: str) -> None:
    with pytest.raises(SandboxError) as raised:
        HelperRequest.from_json(json.dumps({**GOOD, **change}))
    assert said in raised.value.message and raised.value.status == ExitStatus.USAGE


@pytest.mark.parametrize(("downloads", "given", "refused"), [
    ("App", "/home/u/Downloads/App", False),
    (None, None, False),
    ("App", "/home/u/Documents", True),
    ("App", None, True),
    (None, "/home/u/Downloads/App", True),
])
def test_the_helper_takes_the_profiles_downloads_directory_alone(
        downloads: str | None, given: str | None, refused: bool) -> None:
    """A request's downloads directory must be the one the profile names (the helper binds it
    writable into the sandbox), and none where the profile has none."""
    from sandboxapp.helper.privileged import _checked_downloads
    from tests.unit.plans import profile_with

    profile = profile_with({} if downloads is None else {"downloads": downloads})
    path = None if given is None else Path(given)
    if refused:
        with pytest.raises(SandboxError, match="downloads directory is not the profile's"):
            _checked_downloads(path, profile)
    else:
        assert _checked_downloads(path, profile) == path


@pytest.mark.parametrize("text", ["[" * 30000, "x" * 70000, "launch app", '"pending"'])
def test_a_request_that_is_no_json_object_is_refused_in_a_line(text: str) -> None:
    with pytest.raises(SandboxError) as raised:
        HelperRequest.from_json(text)
    assert "malformed" in raised.value.message and raised.value.status == ExitStatus.USAGE


@pytest.mark.parametrize(("sandbox", "given", "said"), [
    ({"x11": True}, {"display": {"display": 7, "x11_dir": "x"}}, "x11_dir is not an absolute"),
    ({"x11": True}, {"display": {"display": 7}}, "not {display, x11_dir}"),
    ({"x11": True}, {}, "needs the X display"),
    ({"x11": "trusted"}, {"display": {"display": 7, "x11_dir": None}},
     "x11_dir is not an absolute"),
    ({}, {"sound": {"dir": "/s"}}, "sound was asked for"),
    ({"pulseaudio": True}, {"sound": {"dir": "/s", "more": 1}}, "not {dir}"),
    ({}, {"tunnel": {}}, "no grant is called tunnel"),
])
def test_a_grant_the_profile_does_not_give_or_in_the_wrong_form_is_refused(
        tmp_path: Path, sandbox: dict[str, object], given: dict[str, object],
        said: str) -> None:
    """Each feature checks its own part of the request against the profile."""
    plan = make_plan(tmp_path, sandbox)
    with pytest.raises(SandboxError) as raised:
        features_for(plan, given)
    assert said in raised.value.message


def test_a_native_wayland_launch_gets_the_compositor_socket_alone_and_no_display(
        tmp_path: Path, sockets: Path) -> None:
    import dataclasses

    from sandboxapp.features.wayland import INSIDE_SOCKET, WaylandAccess
    from sandboxapp.host.wayland import WaylandChoice, WaylandPath

    compositor = tmp_path / "wayland-0"
    session_plan = make_plan(tmp_path, {**PREPARED, "wayland": True})
    plan = dataclasses.replace(session_plan, display=None, wayland=WaylandChoice(
        compositor, WaylandPath.COMPOSITOR, "every global is one any client may have"))
    launching = Launching(tmp_path, plan, _sound_env(sockets))
    with launching.stack:
        prepared = prepare_features(launching.session, launching.stack)
        assert "DisplayAccess" not in [type(f).__name__ for f in prepared]
        parts = grants_of(prepared)
        assert parts["wayland"] == {"socket": str(compositor)} and "display" not in parts
        # The root side's plan is shown natively on the socket the request names; it checks
        # and stages that socket as the user's own, and binds it alone.
        root_plan = dataclasses.replace(plan, wayland=WaylandChoice(
            compositor, WaylandPath.COMPOSITOR, "the launcher's choice"))
        rebuilt = features_for(root_plan, parts)
        assert _view(rebuilt, root_plan) == _view(prepared, plan)
        binds, env, _, _, checked = _view(rebuilt, root_plan)
        wayland = [b for b in binds if b.container == str(INSIDE_SOCKET)]
        assert len(wayland) == 1 and wayland[0].root_idmap and wayland[0].host == compositor
        assert ("WAYLAND_DISPLAY", str(INSIDE_SOCKET)) in env
        assert not [key for key, _ in env if key == "DISPLAY"]
        assert [c for c in checked if c.path == compositor and not c.trusted]
        # A profile without wayland = true is never given the compositor.
        (tmp_path / "other").mkdir()
        other = dataclasses.replace(make_plan(tmp_path / "other", PREPARED), display=None)
        with pytest.raises(SandboxError, match="no wayland = true"):
            features_for(other, {"wayland": {"socket": str(compositor)}})
        assert WaylandAccess.naming(session_plan, None) is None
