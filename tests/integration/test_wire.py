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
from sandboxapp.host.soundproxy import SourceLookup
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


def test_the_source_lookup_asks_a_server_of_another_user_with_its_cookie(
        shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sound proxy's question to the user's server (which source a record stream names),
    through libpulse, which finds the user's cookie as every program of the user's does."""
    with sound_server(shared_dir, run_as=NOBODY) as server:
        assert os.stat(server.socket).st_uid == NOBODY[0]
        # Root is not the server's user: without the cookie it is turned away (no answer).
        monkeypatch.setenv("HOME", str(shared_dir))
        monkeypatch.delenv("PULSE_COOKIE", raising=False)
        lookup = SourceLookup(server.socket)
        try:
            assert lookup(pulsewire.INVALID_INDEX, TEST_MICROPHONE) is None
        finally:
            lookup.close()
        monkeypatch.setenv("PULSE_COOKIE", str(server.runtime_dir / ".config/pulse/cookie"))
        lookup = SourceLookup(server.socket)
        try:
            # A microphone, and the speakers' monitor, by name and by index.
            microphone = lookup(pulsewire.INVALID_INDEX, TEST_MICROPHONE)
            monitor = lookup(pulsewire.INVALID_INDEX, f"{TEST_SINK}.monitor")
            assert microphone is not None and not microphone.is_monitor
            assert monitor is not None and monitor.is_monitor
            assert lookup(monitor.index, None) == monitor
            assert lookup(pulsewire.INVALID_INDEX, "no-such-source") is None
            assert lookup(pulsewire.INVALID_INDEX, "@DEFAULT_SOURCE@") is not None
        finally:
            lookup.close()


def test_the_host_list_is_read_with_the_users_cookie_as_xhost_shows_it(
        xserver: XServer) -> None:
    display = parse_display(xserver.display)
    access = x11.XAccess(display, str(xserver.xauthority))
    uid = 1879048192 + 12345
    ids = range(1879048192, 1879048192 + 65536)
    assert x11.cookieless_admission(access, ids) is None
    for entry, said in ((f"si:localuser:#{uid}", f"SI:localuser:#{uid}"),
                        ("local:", "LOCAL: (xhost +local:)")):
        subprocess.run(["xhost", "+" + entry], env=xserver.client_env(), check=True,
                       capture_output=True)
        try:
            assert x11.cookieless_admission(access, ids) == said
        finally:
            subprocess.run(["xhost", "-" + entry], env=xserver.client_env(), check=True,
                           capture_output=True)
    assert x11.cookieless_admission(access, ids) is None
    without = x11.XAccess(display, "/nonexistent/xauthority")
    with pytest.raises(SandboxError, match="cannot open the X display"):
        x11.cookieless_admission(without, ids)
