"""Every malformed profile gives one line naming the file and the key, and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandboxapp.cli import main

GOOD = """\
command = ["xeyes"]
[image]
packages = ["x11-apps"]
[sandbox]
x11 = true
"""

# (test id, profile text, what the one-line error must mention)
MALFORMED: list[tuple[str, str, tuple[str, ...]]] = [
    ("toml-syntax", 'command = ["xeyes"\n', ("TOML syntax error", "Unclosed array")),
    ("toml-duplicate-key", 'command = ["a"]\ncommand = ["b"]\n', ("TOML syntax error",)),
    ("unknown-top-key", GOOD + 'colour = "red"\n', ("colour", "unknown key")),
    ("unknown-top-key-typo", 'comand = ["xeyes"]\n', ("comand", "unknown key")),
    ("unknown-sandbox-key", 'command = ["x"]\n[sandbox]\nnetwrk = "host"\n',
     ("sandbox.netwrk", "unknown key", "network")),
    ("unknown-image-key", 'command = ["x"]\n[image]\ndistro = "debian"\n',
     ("image.distro", "unknown key")),
    ("missing-command", "[sandbox]\nx11 = true\n", ("command", "missing")),
    ("empty-command", "command = []\n", ("command", "empty array")),
    ("command-string", 'command = "xeyes"\n', ("command", "string 'xeyes'", "array")),
    ("command-number-item", 'command = ["xeyes", 3]\n', ("command[1]", "integer 3")),
    ("command-empty-word", 'command = [""]\n', ("command[0]", "non-empty")),
    ("description-number", 'description = 5\ncommand = ["x"]\n', ("description", "integer 5")),
    ("description-multiline", 'description = """a\nb"""\ncommand = ["x"]\n',
     ("description", "line break")),
    ("image-not-table", 'command = ["x"]\nimage = "bookworm"\n', ("image", "a table [image]")),
    ("suite-number", 'command = ["x"]\n[image]\nsuite = 12\n', ("image.suite", "integer 12")),
    ("suite-bad-chars", 'command = ["x"]\n[image]\nsuite = "Bookworm Updates"\n',
     ("image.suite", "Bookworm Updates")),
    ("packages-string", 'command = ["x"]\n[image]\npackages = "firefox-esr"\n',
     ("image.packages", "string")),
    ("package-bad-name", 'command = ["x"]\n[image]\npackages = ["Firefox ESR"]\n',
     ("image.packages[0]", "Debian package names")),
    ("package-option", 'command = ["x"]\n[image]\npackages = ["--allow-unauthenticated"]\n',
     ("image.packages[0]", "--allow-unauthenticated")),
    ("mirror-not-url", 'command = ["x"]\n[image]\nmirror = "debian mirror"\n',
     ("image.mirror", "http://")),
    ("mirror-ftp", 'command = ["x"]\n[image]\nmirror = "ftp://example.org/debian"\n',
     ("image.mirror", "ftp://")),
    ("x11-string", 'command = ["x"]\n[sandbox]\nx11 = "yes"\n',
     ("sandbox.x11", "found string 'yes'", '"trusted"')),
    ("pulseaudio-int", 'command = ["x"]\n[sandbox]\npulseaudio = 1\n',
     ("sandbox.pulseaudio", "integer 1")),
    ("stateless-string", 'command = ["x"]\n[sandbox]\nstateless = "true"\n',
     ("sandbox.stateless", "true or false")),
    ("downloads-slash", 'command = ["x"]\n[sandbox]\ndownloads = "../Documents"\n',
     ("sandbox.downloads", "'../Documents'", "no '/'")),
    ("downloads-hidden", 'command = ["x"]\n[sandbox]\ndownloads = ".."\n',
     ("sandbox.downloads", "not starting with '.'")),
    ("downloads-persisted-too",
     'command = ["x"]\n[sandbox]\npersist = ["/root"]\ndownloads = "App"\n',
     ("sandbox.downloads", "overlaps sandbox.persist[0]")),
    ("clipboard-bad", 'command = ["x"]\n[sandbox]\nclipboard = "both"\n',
     ("sandbox.clipboard", "'both'", '"focus", "in", "out", "none"')),
    ("clipboard-bool", 'command = ["x"]\n[sandbox]\nclipboard = true\n',
     ("sandbox.clipboard", "boolean")),
    ("network-bad", 'command = ["x"]\n[sandbox]\nnetwork = "lan"\n',
     ("sandbox.network", "'lan'", '"host" or "none"')),
    ("network-bool", 'command = ["x"]\n[sandbox]\nnetwork = false\n',
     ("sandbox.network", "boolean")),
    ("persist-relative", 'command = ["x"]\n[sandbox]\npersist = [".mozilla"]\n',
     ("sandbox.persist[0]", "relative path")),
    ("persist-dotdot", 'command = ["x"]\n[sandbox]\npersist = ["/root/../etc"]\n',
     ("sandbox.persist[0]", "'..'")),
    ("persist-dot", 'command = ["x"]\n[sandbox]\npersist = ["/root/./x"]\n',
     ("sandbox.persist[0]", "'.'")),
    ("persist-root", 'command = ["x"]\n[sandbox]\npersist = ["/"]\n',
     ("sandbox.persist[0]", "below '/'")),
    ("persist-proc", 'command = ["x"]\n[sandbox]\npersist = ["/proc/self"]\n',
     ("sandbox.persist[0]", "/proc")),
    ("persist-colon", 'command = ["x"]\n[sandbox]\npersist = ["/root/a:b"]\n',
     ("sandbox.persist[0]", "':'")),
    ("persist-duplicate", 'command = ["x"]\n[sandbox]\npersist = ["/root/a", "/root/a"]\n',
     ("sandbox.persist[1]", "duplicate")),
    ("persist-nested", 'command = ["x"]\n[sandbox]\npersist = ["/root", "/root/.mozilla"]\n',
     ("sandbox.persist[1]", "overlaps")),
    ("persist-not-array", 'command = ["x"]\n[sandbox]\npersist = "/root/a"\n',
     ("sandbox.persist", "array")),
    ("env-not-table", 'command = ["x"]\n[sandbox]\nenv = ["A=1"]\n', ("sandbox.env", "table")),
    ("env-int-value", 'command = ["x"]\n[sandbox.env]\nLANG = 1\n',
     ("sandbox.env.LANG", "integer 1")),
    ("env-bad-name", 'command = ["x"]\n[sandbox.env]\n"MY-VAR" = "1"\n',
     ("sandbox.env.MY-VAR", "names of letters")),
    ("env-reserved", 'command = ["x"]\n[sandbox.env]\nDISPLAY = ":1"\n',
     ("sandbox.env.DISPLAY", "set by sandboxapp")),
    ("bind-relative-host", 'command = ["x"]\n[sandbox]\nbind_ro = ["etc/fonts:/etc/fonts"]\n',
     ("sandbox.bind_ro[0]", "absolute")),
    ("bind-relative-container", 'command = ["x"]\n[sandbox]\nbind_ro = ["/srv/a:srv/a"]\n',
     ("sandbox.bind_ro[0]", "relative")),
    ("bind-dotdot", 'command = ["x"]\n[sandbox]\nbind_ro = ["/srv/../etc:/srv"]\n',
     ("sandbox.bind_ro[0]", "'..'")),
    ("bind-over-persist", 'command = ["x"]\n[sandbox]\npersist = ["/data"]\n'
     'bind_ro = ["/srv/a:/data/a"]\n', ("sandbox.bind_ro[0]", "overlaps")),
    ("sandbox-not-table", 'command = ["x"]\nsandbox = true\n', ("sandbox", "a table [sandbox]")),
    ("repositories-not-array", 'command = ["x"]\n[image]\nrepositories = "http://r/"\n',
     ("image.repositories", "array of tables")),
    ("repository-bad-uri", 'command = ["x"]\n[[image.repositories]]\nuri = "ftp://r/"\n'
     'suite = "./"\nkey = "/k.asc"\n', ("image.repositories[0].uri", "http://")),
    ("repository-flat-components", 'command = ["x"]\n[[image.repositories]]\nuri = "http://r/"'
     '\nsuite = "./"\ncomponents = ["main"]\nkey = "/k.asc"\n',
     ("image.repositories[0].components", "flat")),
    ("repository-relative-key", 'command = ["x"]\n[[image.repositories]]\nuri = "http://r/"'
     '\nsuite = "stable"\nkey = "k.asc"\n', ("image.repositories[0].key", "relative")),
    ("repository-unknown-key", 'command = ["x"]\n[[image.repositories]]\nuri = "http://r/"'
     '\nsuite = "./"\nkey = "/k"\ntrusted = true\n',
     ("image.repositories[0].trusted", "unknown key")),
    ("update-days-zero", 'command = ["x"]\n[image]\nupdate_after_days = 0\n',
     ("image.update_after_days", "1 to 365")),
    ("auto-update-string", 'command = ["x"]\n[image]\nauto_update = "yes"\n',
     ("image.auto_update", "true or false")),
]


def _locations_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SANDBOXAPP_IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("DISPLAY", ":99")
    profiles = tmp_path / "config" / "sandboxapp" / "profiles"
    profiles.mkdir(parents=True)
    return profiles


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_profile_is_one_line_exit_2(
    text: str, expected: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profiles = _locations_env(tmp_path, monkeypatch)
    path = profiles / "broken.toml"
    path.write_text(text)

    status = main(["run", "--dry-run", "broken"])

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sandboxapp: {path}: ")
    for fragment in expected:
        assert fragment in lines[0]
    assert "allowed" in lines[0] or "TOML syntax error" in lines[0]


def test_the_good_profile_in_the_table_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    profiles = _locations_env(tmp_path, monkeypatch)
    (profiles / "good.toml").write_text(GOOD)
    assert main(["run", "--dry-run", "good"]) == 0
    assert "xeyes" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["../etc/passwd", "Firefox", "rf!", ".hidden", "a b", "x" * 65])
def test_bad_profile_names_are_refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _locations_env(tmp_path, monkeypatch)
    # Names with a slash are taken as file paths; everything else must be a valid name.
    status = main(["run", "--dry-run", name])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandboxapp: "), err
    if "/" not in name:
        assert f"invalid profile name {name!r}; allowed: lower-case letters" in lines[0]


def test_unknown_profile_names_the_places_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    profiles = _locations_env(tmp_path, monkeypatch)
    assert main(["run", "--dry-run", "nosuchapp"]) == 2
    err = capsys.readouterr().err
    assert "no profile named 'nosuchapp'" in err
    assert str(profiles) in err


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('command = ["x"]\n[sandbox]\nnetwork = "lan"\n')
    result = subprocess.run(
        [sys.executable, "-m", "sandboxapp", "run", "--dry-run", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert "sandbox.network" in result.stderr
