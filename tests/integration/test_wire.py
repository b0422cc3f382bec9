"""The launch's own X11 and PulseAudio clients against the real servers, including ones that
run as another user and admit a client only by its cookie."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.host import pulsewire, x11
from sandboxapp.host.display import parse_display
from sandboxapp.host.sound import MODULE
from tests.harness import TEST_MICROPHONE, TEST_SINK, XServer, sound_server

NOBODY = (65534, 65534)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="sandboxapp-wire-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def test_a_sound_server_of_another_user_admits_us_by_its_cookie(shared_dir: Path) -> None:
    with sound_server(shared_dir, run_as=NOBODY) as server:
        assert os.stat(server.socket).st_uid == NOBODY[0]
        cookie = pulsewire.read_cookie(server.client_env())
        assert cookie != bytes(pulsewire.COOKIE_SIZE)
        socket = server.runtime_dir / "extra"
        loaded = subprocess.run(
            ["setpriv", f"--reuid={NOBODY[0]}", f"--regid={NOBODY[1]}", "--clear-groups",
             "pactl", "load-module", MODULE, f"socket={socket}"],
            env=server.client_env(), capture_output=True, text=True, check=True)
        index = int(loaded.stdout)
        connection = pulsewire.Connection(server.socket, cookie, "sandboxapp-test")
        try:
            module = connection.module(index)
            assert module is not None and module.argument == f"socket={socket}"
            assert module in connection.modules()
            connection.unload_module(index)
            assert connection.module(index) is None
            assert not socket.exists()
            # Sources: a microphone, and the speakers' monitor, by name and by index.
            microphone = connection.source(pulsewire.INVALID_INDEX, TEST_MICROPHONE)
            monitor = connection.source(pulsewire.INVALID_INDEX, f"{TEST_SINK}.monitor")
            assert microphone is not None and not microphone.is_monitor
            assert monitor is not None and monitor.is_monitor
            assert connection.source(monitor.index, None) == monitor
            assert connection.source(pulsewire.INVALID_INDEX, "no-such-source") is None
        finally:
            connection.close()
        # Root is not the server's user: without the cookie it is turned away.
        with pytest.raises(pulsewire.PulseError, match="access denied"):
            pulsewire.Connection(server.socket, bytes(pulsewire.COOKIE_SIZE), "sandboxapp-test")


def xhost(xserver: XServer) -> list[str]:
    out = subprocess.run(["xhost"], env=xserver.client_env(), capture_output=True, text=True,
                         check=True).stdout
    return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def test_the_x_grant_needs_the_cookie_and_is_exactly_one_entry(xserver: XServer) -> None:
    display = parse_display(xserver.display)
    access = x11.XAccess(display, str(xserver.xauthority))
    uid = 1879048192 + 12345
    before = xhost(xserver)
    assert x11.grant(access, uid) is True
    try:
        assert xhost(xserver) == [*before, f"SI:localuser:#{uid}"]
        assert x11.grant(access, uid) is False  # there already: left to whoever made it
        assert not x11.admits_everyone_local(access)
    finally:
        x11.revoke(access, uid)
    assert xhost(xserver) == before
    x11.revoke(access, uid)  # a second revoke finds nothing to do
    without = x11.XAccess(display, "/nonexistent/xauthority")
    with pytest.raises(SandboxError, match="cannot open the X display"):
        x11.grant(without, uid)
