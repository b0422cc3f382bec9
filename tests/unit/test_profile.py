from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.paths import SHIPPED_PROFILE_DIR, Locations
from sandboxapp.profile.find import find_profile, iter_profile_files, load_profile_file
from sandboxapp.profile.model import Network, ReadOnlyBind, X11Access
from sandboxapp.profile.parse import KEYS, readme_example

FULL = """\
description = "A browser"
command = ["firefox-esr", "--no-remote"]
[image]
suite = "trixie"
packages = ["firefox-esr", "libpulse0"]
mirror = "https://mirror.example/debian"
[sandbox]
stateless = true
x11 = true
pulseaudio = true
network = "host"
persist = ["/root/.mozilla", "/root/Downloads"]
env = { MOZ_ENABLE_WAYLAND = "0", LANG = "C.UTF-8" }
bind_ro = ["/usr/share/fonts/truetype:/usr/local/share/fonts", "/srv/docs"]
"""


def locations(tmp_path: Path) -> Locations:
    return Locations(
        image_dir=tmp_path / "images",
        run_dir=tmp_path / "run",
        config_home=tmp_path / "config",
        data_home=tmp_path / "data",
        system_profiles=tmp_path / "etc",
        shipped_profiles=tmp_path / "shipped",
    )


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_full_profile_is_read_into_typed_values(tmp_path: Path) -> None:
    profile = load_profile_file(write(tmp_path, "browser", FULL))
    assert profile.name == "browser"
    assert profile.command == ("firefox-esr", "--no-remote")
    assert profile.image.suite == "trixie"
    assert profile.image.packages == ("firefox-esr", "libpulse0")
    assert profile.image.mirror == "https://mirror.example/debian"
    assert profile.sandbox.network is Network.HOST
    assert profile.sandbox.persist == (PurePosixPath("/root/.mozilla"),
                                       PurePosixPath("/root/Downloads"))
    assert dict(profile.sandbox.env) == {"MOZ_ENABLE_WAYLAND": "0", "LANG": "C.UTF-8"}
    assert profile.sandbox.bind_ro == (
        ReadOnlyBind(PurePosixPath("/usr/share/fonts/truetype"),
                     PurePosixPath("/usr/local/share/fonts")),
        ReadOnlyBind(PurePosixPath("/srv/docs"), PurePosixPath("/srv/docs")),
    )


def test_defaults_grant_nothing(tmp_path: Path) -> None:
    profile = load_profile_file(write(tmp_path, "bare", 'command = ["true"]\n'))
    assert profile.sandbox.x11 is X11Access.NONE
    assert profile.sandbox.pulseaudio is False
    assert profile.sandbox.network is Network.NONE
    assert profile.sandbox.stateless is True
    assert profile.sandbox.persist == ()
    assert profile.image.suite == "bookworm"
    assert profile.image.mirror is None


def test_lookup_order_user_then_system_then_shipped(tmp_path: Path) -> None:
    loc = locations(tmp_path)
    user_dir = loc.config_home / "sandboxapp" / "profiles"
    write(loc.shipped_profiles, "app", 'command = ["shipped"]\n')
    write(loc.system_profiles, "app", 'command = ["system"]\n')
    assert find_profile("app", loc).command == ("system",)
    assert find_profile("app", loc).origin == "system"
    write(user_dir, "app", 'command = ["user"]\n')
    assert find_profile("app", loc).command == ("user",)
    entries = [e for e in iter_profile_files(loc) if e.name == "app"]
    assert [e.origin for e in entries] == ["user", "system", "shipped"]
    assert entries[0].shadowed_by is None
    assert entries[1].shadowed_by == user_dir / "app.toml"


def test_a_broken_user_profile_is_reported_not_skipped(tmp_path: Path) -> None:
    loc = locations(tmp_path)
    write(loc.shipped_profiles, "app", 'command = ["shipped"]\n')
    write(loc.config_home / "sandboxapp" / "profiles", "app", "command = 3\n")
    with pytest.raises(SandboxError) as info:
        find_profile("app", loc)
    assert info.value.status == 2


@pytest.mark.parametrize("path", sorted(SHIPPED_PROFILE_DIR.glob("*.toml")),
                         ids=lambda p: p.stem)
def test_shipped_profiles_are_valid(path: Path) -> None:
    profile = load_profile_file(path, "shipped")
    assert profile.command
    assert profile.sandbox.x11 is X11Access.ISOLATED


def test_shipped_profiles_include_firefox_and_a_small_x11_program() -> None:
    names = {p.stem for p in SHIPPED_PROFILE_DIR.glob("*.toml")}
    assert {"firefox", "xeyes"} <= names


@pytest.mark.parametrize(("value", "x11"), [
    ("true", X11Access.ISOLATED), ("false", X11Access.NONE), ('"trusted"', X11Access.TRUSTED)])
def test_x11_is_untrusted_unless_the_profile_says_trusted(tmp_path: Path, value: str,
                                                           x11: X11Access) -> None:
    text = f'command = ["x"]\n[sandbox]\nx11 = {value}\n'
    profile = load_profile_file(write(tmp_path, "x", text))
    assert profile.sandbox.x11 is x11


def test_the_readmes_example_profile_is_the_table_of_keys() -> None:
    """Every key a profile may have is in the README's example, as the table of keys says it,
    and no other."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"```toml\n{readme_example()}```" in readme
    written = {line.split("=")[0].strip() for line in readme_example().splitlines()
               if "=" in line and not line.startswith(" ")}
    assert written == {key.name for key in KEYS if key.readme}
    assert {key.name for key in KEYS if not key.readme} == {"image", "sandbox", "repositories"}
