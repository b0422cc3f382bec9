"""The test X and sound servers behave like a desktop's: otherwise later tests prove nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness import SoundServer, XServer, peak_level, recording, write_tone


def test_x_server_refuses_a_client_without_the_cookie(xserver: XServer) -> None:
    without = subprocess.run(["xdpyinfo"], env={"PATH": "/usr/bin:/bin",
                                                "DISPLAY": xserver.display},
                             capture_output=True, text=True, check=False)
    assert without.returncode != 0
    assert "unable to open display" in without.stderr
    with_cookie = subprocess.run(["xdpyinfo"], env=xserver.client_env(), capture_output=True,
                                 text=True, check=False)
    assert with_cookie.returncode == 0
    hosts = subprocess.run(["xhost"], env=xserver.client_env(), capture_output=True, text=True,
                           check=True).stdout
    assert "access control enabled" in hosts


def test_sound_server_records_what_is_played(soundserver: SoundServer, tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    write_tone(tone)
    silence_file = tmp_path / "silence.raw"
    with recording(soundserver, silence_file):
        pass
    played_file = tmp_path / "played.raw"
    with recording(soundserver, played_file):
        subprocess.run(["paplay", str(tone)], env=soundserver.client_env(), check=True,
                       timeout=30)
    assert peak_level(silence_file.read_bytes()) < 100
    assert peak_level(played_file.read_bytes()) > 5000
