from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sandboxapp.fs.util import mounts_under
from sandboxapp.image.store import ImageStore, spec_digest
from sandboxapp.paths import SHIPPED_PROFILE_DIR
from sandboxapp.profile.find import load_profile_file
from sandboxapp.system.layer import remove_layer
from tests.harness import (
    SoundServer,
    XServer,
    pipewire_server,
    require_programs,
    sound_server,
    x_server,
)

if TYPE_CHECKING:
    # launching imports this module: the class is only named here.
    from tests.integration.launching import Session

REPO = Path(__file__).resolve().parents[2]
TEST_PROFILE = REPO / "tests" / "profiles" / "sandboxapp-test.toml"
# Built once and kept between test runs on the same machine: a second run does not debootstrap.
TEST_IMAGE_DIR = Path(os.environ.get("SANDBOXAPP_TEST_IMAGE_DIR",
                                     "/var/cache/sandboxapp-tests/images"))


def sandboxapp(*args: str, env: dict[str, str] | None = None, timeout: float = 900,
               check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real command line, the way a user does."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "sandboxapp", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=check,
                          cwd=REPO)


def _remove_layers_of_a_killed_run(store: Path) -> None:
    """The store is kept between runs: a run killed mid-launch (SIGKILL to the whole session)
    leaves a layer whose record was in that run's temporary directory. Remove it the way a
    launch of the same name would, so that tests asserting "no mounts left" see this run's."""
    layers = store / ".layers"
    if layers.is_dir():
        for layer in layers.iterdir():
            remove_layer(layer, kill_leftovers=True)
    assert mounts_under(store) == []


@pytest.fixture(scope="session")
def test_image_dir() -> Path:
    """The image store holding the test image, built with sandboxapp's own builder."""
    require_programs("debootstrap", "systemd-nspawn")
    if os.geteuid() != 0:
        pytest.fail("integration tests need root")
    _remove_layers_of_a_killed_run(TEST_IMAGE_DIR)
    profile = load_profile_file(TEST_PROFILE)
    image = ImageStore(TEST_IMAGE_DIR).get(profile.name)
    if image is None or image.meta.spec_digest != spec_digest(profile.image):
        result = sandboxapp("image", "build", "--force", str(TEST_PROFILE),
                            env={"SANDBOXAPP_IMAGE_DIR": str(TEST_IMAGE_DIR)})
        assert result.returncode == 0, result.stderr
    return TEST_IMAGE_DIR


@pytest.fixture(scope="session")
def test_image_meta(test_image_dir: Path) -> dict[str, object]:
    data = json.loads((test_image_dir / "sandboxapp-test" / "image.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def xserver(tmp_path: Path) -> Iterator[XServer]:
    with x_server(tmp_path) as server:
        yield server


@pytest.fixture
def soundserver(tmp_path: Path) -> Iterator[SoundServer]:
    with sound_server(tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def firefox_image_dir() -> Path:
    profile = load_profile_file(SHIPPED_PROFILE_DIR / "firefox.toml", "shipped")
    image = ImageStore(TEST_IMAGE_DIR).get("firefox")
    if image is None or image.meta.spec_digest != spec_digest(profile.image):
        result = sandboxapp("image", "build", "--force", "firefox",
                            env={"SANDBOXAPP_IMAGE_DIR": str(TEST_IMAGE_DIR)}, timeout=1800)
        assert result.returncode == 0, result.stderr
    return TEST_IMAGE_DIR


@pytest.fixture
def session(tmp_path: Path, test_image_dir: Path, xserver: XServer,
            soundserver: SoundServer) -> Session:
    """A desktop session's environment around the test image: display, sound, directories."""
    from tests.integration.launching import Session

    return Session(tmp_path, test_image_dir, xserver, soundserver)



@pytest.fixture(params=["pulseaudio", "pipewire"])
def server(request: pytest.FixtureRequest, session: Session,
           tmp_path: Path) -> Iterator[SoundServer]:
    """The session's sound server, PulseAudio as a Debian desktop runs it, then PipeWire with
    WirePlumber: a test that takes it runs against each."""
    if request.param == "pulseaudio":
        assert session.sound is not None
        yield session.sound
        return
    with pipewire_server(tmp_path) as pipewire:
        session.sound = pipewire
        yield pipewire
