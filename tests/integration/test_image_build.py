"""Building images for real: debootstrap, security updates, ownership shift, atomic commit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandboxapp.fs.util import mounts_under, processes_using
from sandboxapp.system.uidrange import END, FIRST_BASE
from tests.integration.conftest import REPO, TEST_PROFILE, sandboxapp

NAME = "sandboxapp-test"


def nspawn_in_image(rootfs: Path, base: int, *command: str) -> subprocess.CompletedProcess[str]:
    """A bare systemd-nspawn run in the image, read-only, in its own UID block."""
    return subprocess.run(
        ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--directory={rootfs}",
         "--read-only", f"--private-users={base}:65536", "--private-network", "--as-pid2",
         *command],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_test_image_is_built_shifted_and_runnable(
    test_image_dir: Path, test_image_meta: dict[str, object]
) -> None:
    base = test_image_meta["uid_base"]
    assert isinstance(base, int)
    assert FIRST_BASE <= base < END and base % 65536 == 0
    assert test_image_meta["suite"] == "bookworm"
    assert test_image_meta["packages"] == ["x11-utils", "x11-apps", "xdotool", "xclip",
                                          "pulseaudio-utils", "python3-minimal", "dbus-daemon",
                                          "libglib2.0-bin"]
    rootfs = test_image_dir / NAME / "rootfs"
    # Ownership was shifted into the image's own block once, at build time.
    assert rootfs.stat().st_uid == base
    assert (rootfs / "usr/bin/xdpyinfo").stat().st_uid == base
    assert (rootfs / "usr/bin/pactl").stat().st_uid == base
    # The security repository is configured, apt's caches are gone, no service policy is left.
    sources = (rootfs / "etc/apt/sources.list").read_text()
    assert "bookworm-security" in sources
    assert not list((rootfs / "var/cache/apt/archives").glob("*.deb"))
    assert not list((rootfs / "var/lib/apt/lists").glob("*Packages*"))
    assert not (rootfs / "usr/sbin/policy-rc.d").exists()

    result = nspawn_in_image(rootfs, base, "/bin/sh", "-c", "id -u; xdpyinfo -version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "0"
    assert "xdpyinfo" in result.stdout

    listing = sandboxapp("image", "list", env={"SANDBOXAPP_IMAGE_DIR": str(test_image_dir)})
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.startswith(NAME))
    assert f"{base}-{base + 65535}" in row
    assert "bookworm" in row


def test_list_shows_profiles_with_their_image_state(test_image_dir: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "config" / "sandboxapp" / "profiles"
    profiles.mkdir(parents=True)
    shutil.copy(TEST_PROFILE, profiles)
    result = sandboxapp("list", env={"SANDBOXAPP_IMAGE_DIR": str(test_image_dir),
                                     "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows[NAME][1:3] == ["user", "built"]
    assert rows["firefox"][1] == "shipped"


def _start_build(image_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "SANDBOXAPP_IMAGE_DIR": str(image_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "sandboxapp", "image", "build", *extra, str(TEST_PROFILE)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


def _kill_halfway(image_dir: Path, *extra: str) -> Path:
    """Start a build and SIGKILL it while debootstrap is installing the base system."""
    process = _start_build(image_dir, *extra)
    deadline = time.monotonic() + 300
    build_dir: Path | None = None
    while time.monotonic() < deadline and process.poll() is None:
        candidates = list(image_dir.glob(".build-*"))
        if candidates and (candidates[0] / "rootfs/var/lib/dpkg/status").exists():
            build_dir = candidates[0]
            break
        time.sleep(0.2)
    assert build_dir is not None, "the build never got into debootstrap"
    time.sleep(3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return build_dir


def _wait_unused(path: Path) -> None:
    # A process killed in the middle of writing (dpkg syncs) dies only once the kernel has
    # written its data back, which on a busy disk takes a while.
    deadline = time.monotonic() + 120
    while processes_using(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_using(path)
    assert left == [], f"processes of the killed build outlived it: {_describe(left)}"


def _describe(pids: list[int]) -> list[str]:
    """pid, state and command of each, for a failure message."""
    described = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        described.append(f"{pid} {state} {command.decode(errors='replace')[:200]}")
    return described


def test_killed_build_leaves_no_image_and_the_next_build_cleans_up(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    env = {"SANDBOXAPP_IMAGE_DIR": str(image_dir)}

    debris = _kill_halfway(image_dir)
    # Everything the killed build started died with it (debootstrap, dpkg, its mounts).
    _wait_unused(debris)
    assert mounts_under(image_dir) == []
    assert not (image_dir / NAME).exists()
    listing = sandboxapp("image", "list", env=env)
    assert "no images" in listing.stdout

    rebuilt = sandboxapp("image", "build", str(TEST_PROFILE), env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "removing .build-" in rebuilt.stderr
    assert not debris.exists()
    assert sorted(p.name for p in image_dir.iterdir()) == [".locks", ".logs", NAME]
    meta_text = (image_dir / NAME / "image.json").read_text()
    meta = json.loads(meta_text)

    # A forced rebuild killed halfway leaves the previous image as it was, and usable.
    debris = _kill_halfway(image_dir, "--force")
    _wait_unused(debris)
    assert (image_dir / NAME / "image.json").read_text() == meta_text
    run = nspawn_in_image(image_dir / NAME / "rootfs", meta["uid_base"], "xdpyinfo", "-version")
    assert run.returncode == 0, run.stderr

    again = sandboxapp("image", "build", str(TEST_PROFILE), env=env)
    assert again.returncode == 0, again.stderr
    assert "already built" in again.stdout
    assert sorted(p.name for p in image_dir.iterdir()) == [".locks", ".logs", NAME]

    removed = sandboxapp("image", "remove", NAME, env=env)
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in image_dir.iterdir()) == [".locks", ".logs"]
    missing = sandboxapp("image", "remove", NAME, env=env)
    assert missing.returncode == 2
    assert "no image" in missing.stderr


def test_build_failure_names_the_command_and_keeps_no_debris(tmp_path: Path) -> None:
    profile = tmp_path / "nosuchpkg.toml"
    profile.write_text('command = ["true"]\n[image]\npackages = ["no-such-package-sandboxapp"]\n')
    image_dir = tmp_path / "images"
    result = sandboxapp("image", "build", str(profile),
                        env={"SANDBOXAPP_IMAGE_DIR": str(image_dir)})
    assert result.returncode == 1
    assert "apt-get install: command failed (exit status 100): systemd-nspawn" in result.stderr
    assert "Unable to locate package no-such-package-sandboxapp" in result.stderr
    assert f"hint: the full log is in {image_dir}/.logs/build-nosuchpkg.log" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in image_dir.iterdir()) == [".locks", ".logs"]
    assert (image_dir / ".logs" / "build-nosuchpkg.log").stat().st_size > 1000
