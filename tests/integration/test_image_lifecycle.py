"""Image lifecycle against a small signed apt repository served on loopback: first launch
builds, updates are atomic, a running sandbox keeps its image, stale images are named."""

from __future__ import annotations

import functools
import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandboxapp.fs.util import mounts_under
from tests.harness import require_programs
from tests.integration.conftest import REPO
from tests.integration.launching import Session, wait_for_file

PACKAGE = "sandboxapp-hello"


@dataclass
class AptRepository:
    """A flat repository, signed with a key made for the test."""

    root: Path
    gnupg: Path
    key: Path
    url: str

    def publish(self, version: str) -> None:
        build = self.root.parent / f"pkg-{version}"
        (build / "DEBIAN").mkdir(parents=True)
        (build / "usr/bin").mkdir(parents=True)
        (build / "DEBIAN/control").write_text(
            f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
            "Maintainer: sandboxapp tests <tests@sandboxapp.invalid>\n"
            "Description: says which version it is\n")
        program = build / "usr/bin" / PACKAGE
        program.write_text(f"#!/bin/sh\necho hello {version}\n")
        program.chmod(0o755)
        for old in self.root.glob("*.deb"):
            old.unlink()
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(build),
                        str(self.root / f"{PACKAGE}_{version}_all.deb")], check=True,
                       capture_output=True)
        packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=self.root,
                                  check=True, capture_output=True).stdout
        (self.root / "Packages").write_bytes(packages)
        release = subprocess.run(["apt-ftparchive", "release", "."], cwd=self.root, check=True,
                                 capture_output=True).stdout
        (self.root / "Release").write_bytes(release)
        subprocess.run(["gpg", "--homedir", str(self.gnupg), "--batch", "--yes", "--clearsign",
                        "--output", str(self.root / "InRelease"), str(self.root / "Release")],
                       check=True, capture_output=True)


@pytest.fixture
def apt_repository(tmp_path: Path) -> Iterator[AptRepository]:
    require_programs("gpg", "apt-ftparchive", "dpkg-deb")
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(gnupg), "--batch", "--passphrase", "",
                    "--quick-gen-key", "sandboxapp test repository <tests@sandboxapp.invalid>",
                    "default", "default", "never"], check=True, capture_output=True)
    key = tmp_path / "repository.asc"
    key.write_bytes(subprocess.run(["gpg", "--homedir", str(gnupg), "--armor", "--export"],
                                   check=True, capture_output=True).stdout)
    root = tmp_path / "repo"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield AptRepository(root, gnupg, key, f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        # gpg started an agent for the signing key: it would outlive the test.
        subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"],
                       check=False, capture_output=True)


def hello_profile(session: Session, repo: AptRepository, command: list[str],
                  packages: tuple[str, ...] = (PACKAGE,), sandbox: str = "",
                  image: str = "") -> Path:
    session.profiles.mkdir(parents=True, exist_ok=True)
    path = session.profiles / "hello.toml"
    path.write_text(
        f"command = {json.dumps(command)}\n"
        f"[image]\npackages = {json.dumps(list(packages))}\n{image}"
        f'[[image.repositories]]\nuri = "{repo.url}"\nsuite = "./"\nkey = "{repo.key}"\n'
        f'[sandbox]\nnetwork = "none"\n{sandbox}')
    return path


def installed(session: Session) -> str:
    hello_profile_text = (session.profiles / "hello.toml").read_text()
    try:
        result = session.run("hello", "--", "-c", f"{PACKAGE}")
    finally:
        (session.profiles / "hello.toml").write_text(hello_profile_text)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_first_launch_builds_then_updates_are_atomic(tmp_path: Path,
                                                     apt_repository: AptRepository) -> None:
    session = Session(tmp_path, tmp_path / "images")
    repo = apt_repository
    repo.publish("1")

    # A launch with no image builds it first, then runs the program.
    hello_profile(session, repo, [PACKAGE])
    first = session.run("hello", timeout=900)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "hello 1"
    assert "not built yet: building it first" in first.stderr

    hello_profile(session, repo, ["/bin/sh"], sandbox='persist = ["/root/data"]\n')
    assert installed(session) == "hello 1"
    meta_v1 = (session.image_dir / "hello" / "image.json").read_text()

    # A sandbox started on version 1 keeps it while an update installs version 2.
    waiting = session.start(
        "hello", "--", "-c",
        f"{PACKAGE} > /root/data/before; touch /root/data/ready; "
        f"while [ ! -e /root/data/go ]; do sleep 0.05; done; {PACKAGE} > /root/data/after")
    data = session.persist_dir(name="hello")
    wait_for_file(data / "ready", waiting)
    repo.publish("2")
    update = session.sandboxapp("image", "update", "hello", timeout=600)
    assert update.returncode == 0, update.stderr
    assert f"hello: {PACKAGE} 1 -> 2" in update.stdout
    (data / "go").touch()
    assert waiting.wait(timeout=60) == 0
    assert (data / "before").read_text() == "hello 1\n"
    assert (data / "after").read_text() == "hello 1\n"
    assert installed(session) == "hello 2"
    meta = json.loads((session.image_dir / "hello" / "image.json").read_text())
    assert meta["updated_at"] and meta["uid_base"] == json.loads(meta_v1)["uid_base"]

    # An update killed halfway leaves version 2 intact and usable; the next one cleans up.
    repo.publish("3")
    meta_v2 = (session.image_dir / "hello" / "image.json").read_text()
    killed = subprocess.Popen(
        [sys.executable, "-m", "sandboxapp", "image", "update", "hello"], env=session.env(),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(session.image_dir.glob(".build-*/rootfs")):
        time.sleep(0.05)
    time.sleep(1.5)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (session.image_dir / "hello" / "image.json").read_text() == meta_v2
    assert installed(session) == "hello 2"
    again = session.sandboxapp("image", "update", "hello", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "removing .build-hello-" in again.stderr
    assert installed(session) == "hello 3"
    leftovers = [p.name for p in session.image_dir.iterdir() if p.name.startswith(".")]
    # No build directory, and no replaced image kept aside once its sandbox had exited.
    assert sorted(leftovers) == [".layers", ".locks", ".logs"]
    assert not list((session.image_dir / ".layers").iterdir())
    assert mounts_under(session.image_dir) == []

    # A changed package list makes the image stale: list and run say so.
    hello_profile(session, repo, ["/bin/sh"], packages=(PACKAGE, "less"))
    listing = session.sandboxapp("image", "list")
    row = next(line for line in listing.stdout.splitlines() if line.startswith("hello"))
    assert "stale" in row.split()
    stale_run = session.run("hello", "--", "-c", "true")
    assert stale_run.returncode == 0
    assert "is stale" in stale_run.stderr
    assert "sandboxapp image build hello" in stale_run.stderr


def _age_image(session: Session, days: int) -> None:
    """Make the image look `days` old (its metadata is the only clock sandboxapp reads)."""
    from datetime import UTC, datetime, timedelta

    path = session.image_dir / "hello" / "image.json"
    meta = json.loads(path.read_text())
    meta["updated_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    path.write_text(json.dumps(meta))


def test_old_images_are_updated_before_a_launch_or_named(tmp_path: Path,
                                                         apt_repository: AptRepository) -> None:
    session = Session(tmp_path, tmp_path / "images")
    repo = apt_repository
    repo.publish("1")
    hello_profile(session, repo, [PACKAGE])
    built = session.sandboxapp("image", "build", str(session.profiles / "hello.toml"),
                               timeout=900)
    assert built.returncode == 0, built.stderr

    repo.publish("2")
    _age_image(session, 10)
    warned = session.run("hello")
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.strip() == "hello 1"
    assert "is 10 days old; update it with: sandboxapp image update hello" in warned.stderr

    hello_profile(session, repo, [PACKAGE], image="update_after_days = 3\nauto_update = true\n")
    updated = session.run("hello", timeout=600)
    assert updated.returncode == 0, updated.stderr
    assert "updating it first" in updated.stderr
    assert updated.stdout.strip() == "hello 2"
    listing = session.sandboxapp("image", "list")
    row = next(line for line in listing.stdout.splitlines() if line.startswith("hello"))
    assert "current" in row.split() and "0 d" in row

    # A maintenance shell: what it does lands when it exits 0, in the image's UID block.
    shell = subprocess.run(
        [sys.executable, "-m", "sandboxapp", "shell", "hello"], env=session.env(), cwd=REPO,
        input="echo made-in-shell > /etc/sandboxapp-shell\nexit 0\n", capture_output=True,
        text=True, timeout=300, check=False)
    assert shell.returncode == 0, shell.stderr
    assert "kept" in shell.stderr
    made = session.image_dir / "hello" / "rootfs" / "etc" / "sandboxapp-shell"
    meta = json.loads((session.image_dir / "hello" / "image.json").read_text())
    assert made.read_text() == "made-in-shell\n"
    assert made.stat().st_uid == meta["uid_base"]
    discarded = subprocess.run(
        [sys.executable, "-m", "sandboxapp", "shell", "--discard", "hello"], env=session.env(),
        cwd=REPO, input="rm /etc/sandboxapp-shell\nexit 0\n", capture_output=True, text=True,
        timeout=300, check=False)
    assert discarded.returncode == 0, discarded.stderr
    assert made.exists()
    failed = subprocess.run(
        [sys.executable, "-m", "sandboxapp", "shell", "hello"], env=session.env(), cwd=REPO,
        input="rm /etc/sandboxapp-shell\nexit 3\n", capture_output=True, text=True,
        timeout=300, check=False)
    assert failed.returncode == 3
    assert made.exists()

