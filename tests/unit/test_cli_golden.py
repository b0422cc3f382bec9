"""What a user sees stays what it was: `run --dry-run` for a set of profiles, and the one-line
error and exit status of bad profiles and commands, against the text recorded in
golden/cli.txt. A change that means to alter what users see rewrites that file
(SANDBOXAPP_GOLDEN_WRITE=1) and shows the difference in its commit."""

from __future__ import annotations

import contextlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandboxapp.cli import main
from sandboxapp.image.store import META_FILE, ImageMeta, spec_digest
from sandboxapp.paths import Locations
from sandboxapp.profile.find import find_profile
from tests.unit.test_profile_errors import MALFORMED

GOLDEN = Path(__file__).parent / "golden" / "cli.txt"
REPOSITORY = Path(__file__).resolve().parents[2]

BASE = 'command = ["app", "--flag"]\n[image]\npackages = ["x11-apps"]\n'
# (name, profile text): the profiles the dry runs are of, each in the user's profile directory.
PROFILES = {
    "plain": BASE,
    "display": BASE + "[sandbox]\nx11 = true\n",
    "trusted": BASE + '[sandbox]\nx11 = "trusted"\n',
    "sound": BASE + "[sandbox]\npulseaudio = true\nmicrophone = true\n",
    "offline": BASE + '[sandbox]\nnetwork = "none"\nsession_bus = true\n',
    "kept": BASE + "[sandbox]\nstateless = false\npersist = [\"/root/data\", \"/var/cache/x\"]\n"
            'bind_ro = ["/usr/share/fonts:/usr/share/fonts"]\n'
            '[sandbox.env]\nLANG = "C.UTF-8"\nMOZ_X = "1"\n',
}
BUILT = ("plain", "display", "trusted", "sound", "offline", "kept", "firefox", "xeyes")
# (case, argv, environment changes): dry runs, then commands a user may get wrong.
COMMANDS: list[tuple[str, list[str], dict[str, str | None]]] = [
    *[(f"dry-run {name}", ["run", "--dry-run", name, "--", "a b", "--x"], {})
      for name in (*PROFILES, "firefox", "xeyes")],
    ("dry-run not built", ["run", "--dry-run", "unbuilt"], {}),
    ("dry-run command", ["run", "--dry-run", "--command", "/bin/sh", "plain", "--", "-c",
                         "echo"], {}),
    ("dry-run no DISPLAY", ["run", "--dry-run", "display"], {"DISPLAY": None}),
    ("dry-run bad DISPLAY", ["run", "--dry-run", "display"], {"DISPLAY": "remote:0"}),
    ("dry-run no runtime dir", ["run", "--dry-run", "sound"], {"XDG_RUNTIME_DIR": None}),
    ("list", ["list"], {}),
    ("image list", ["image", "list"], {}),
    ("no command", [], {}),
    ("unknown command", ["frobnicate"], {}),
    ("run no profile", ["run"], {}),
    ("run unknown profile", ["run", "--dry-run", "nosuch"], {}),
    ("run bad name", ["run", "--dry-run", "Bad Name"], {}),
    ("run missing file", ["run", "--dry-run", "/nonexistent/x.toml"], {}),
    ("run bad option", ["run", "--bogus", "plain"], {}),
    ("stop unknown", ["stop", "nosuch"], {}),
    ("reset unknown profile", ["reset", "nosuch"], {}),
    ("reset stateless profile", ["reset", "plain"], {}),
    ("stop bad timeout", ["stop", "--timeout", "soon", "plain"], {}),
    ("stop negative timeout", ["stop", "--timeout", "-1", "plain"], {}),
    ("image no action", ["image"], {}),
    ("image remove unbuilt", ["image", "remove", "unbuilt"], {}),
    ("image build unknown", ["image", "build", "nosuch"], {}),
    ("image update unbuilt", ["image", "update", "unbuilt"], {}),
    ("desktop install unknown", ["desktop", "install", "nosuch"], {}),
    ("desktop remove unknown", ["desktop", "remove", "nosuch"], {}),
    ("shell unknown", ["shell", "nosuch"], {}),
    ("setup add bad user", ["setup", "--add-user", "no such user"], {}),
]


def _environment(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "SANDBOXAPP_IMAGE_DIR": str(tmp_path / "images"), "DISPLAY": ":99",
            "XDG_RUNTIME_DIR": str(tmp_path / "runtime"), "HOME": str(tmp_path / "home")}


# The images' build time: a fixed age from now, as `image list` counts it (shown in the golden
# file as <BUILT>, the age as it is).
BUILT_AT = (datetime.now(UTC) - timedelta(days=336, hours=1)).replace(microsecond=0)


def _built(name: str, images: Path, uid_base: int) -> None:
    """An image's record as `image build` leaves it (its root file system is not read by a
    dry run)."""
    profile = find_profile(name, Locations.from_environment())
    meta = ImageMeta(profile=name, uid_base=uid_base, uid_count=65536, suite="bookworm",
                     packages=profile.image.packages, mirror="http://deb.debian.org/debian",
                     security=None, spec_digest=spec_digest(profile.image),
                     built_at=BUILT_AT.isoformat(), size_bytes=1 << 30)
    (images / name / "rootfs").mkdir(parents=True)
    (images / name / META_FILE).write_text(meta.to_json())


def _outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in _environment(tmp_path).items():
        monkeypatch.setenv(key, value)
    profiles = tmp_path / "config" / "sandboxapp" / "profiles"
    profiles.mkdir(parents=True)
    (tmp_path / "runtime").mkdir(mode=0o700)
    for name, text in {**PROFILES, "unbuilt": BASE}.items():
        (profiles / f"{name}.toml").write_text(text)
    for case, text, _ in MALFORMED:
        (profiles / f"bad-{case}.toml").write_text(text)
    for number, name in enumerate(BUILT):
        _built(name, tmp_path / "images", 0x10000000 + number * 0x10000)
    commands = [*COMMANDS, *[(f"bad profile {case}", ["run", "--dry-run", f"bad-{case}"], {})
                             for case, _, _ in MALFORMED]]
    placeholders = {str(tmp_path): "<TMP>", str(REPOSITORY): "<REPOSITORY>",
                    BUILT_AT.isoformat(): "<BUILT>",
                    BUILT_AT.strftime("%Y-%m-%d %H:%M"): "<BUILT>"}
    sections = []
    for case, argv, changes in commands:
        with monkeypatch.context() as scoped:
            for key, change in changes.items():
                if change is None:
                    scoped.delenv(key, raising=False)
                else:
                    scoped.setenv(key, change)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    status = main(argv)
                except SystemExit as exit_:  # argparse's own errors
                    status = exit_.code if isinstance(exit_.code, int) else 1
        text = f"## {case}: sandboxapp {' '.join(argv)}\nstatus {status}\n"
        text += "".join(f"out| {line}\n" for line in out.getvalue().splitlines())
        text += "".join(f"err| {line}\n" for line in err.getvalue().splitlines())
        for shown, placeholder in placeholders.items():
            text = text.replace(shown, placeholder)
        sections.append(text)
    return "\n".join(sections)


def test_what_users_see_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _outputs(tmp_path, monkeypatch)
    if os.environ.get("SANDBOXAPP_GOLDEN_WRITE") == "1":
        GOLDEN.write_text(found)
    assert found == GOLDEN.read_text()
