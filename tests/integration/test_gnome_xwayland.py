"""The display door on the session most Debian 12 desktops run: GNOME's mutter (Wayland) with its
Xwayland, which has no SECURITY extension, run headless as a plain user (tests/harness.py).

The attacks of test_x11_isolation.py (full launches) and test_nested_display.py (the nested
server at its own boundary) are made again here, against Xwayland: every test imported below
runs with this module's `xserver`, and with the one display access Xwayland has, x11 = true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import XServer, gnome_xwayland, require_programs
from tests.integration.launching import NAME, TRUSTED_SANDBOX, Session, write_variant
from tests.integration.test_nested_display import (  # noqa: F401 (collected here again)
    test_a_keyboard_grab_inside_gets_none_of_what_the_user_types_elsewhere,
    test_no_process_can_take_its_abstract_name_to_sit_between_the_sandbox_and_it,
    test_only_its_cookie_opens_it_and_it_listens_on_no_abstract_or_tcp_socket,
    test_the_host_s_shared_memory_is_out_of_reach_through_the_nested_server,
    test_the_user_types_into_the_app_and_its_dialog_once_its_window_has_the_focus,
    test_the_users_clipboard_crosses_in_only_when_the_user_focuses_the_sandbox,
    test_the_users_clipboard_cut_buffer_and_windows_are_out_of_reach,
    test_the_users_pointer_and_screen_saver_settings_are_out_of_reach,
    test_two_sandboxes_cannot_reach_each_other,
    test_what_is_copied_inside_reaches_the_desktop_only_while_the_sandbox_has_the_focus,
)
from tests.integration.test_x11_isolation import (  # noqa: F401 (collected here again)
    test_another_windows_pixels_cannot_be_read,
    test_keys_cannot_be_typed_into_another_window,
    test_keys_typed_into_another_window_cannot_be_logged,
    test_the_sandbox_shows_its_own_window_and_gets_the_users_typing,
)


@pytest.fixture
def xserver(tmp_path: Path) -> Iterator[XServer]:
    require_programs("Xephyr", "xkbcomp", "setxkbmap", "xdotool", "xclip", "xlogo", "xdpyinfo")
    (tmp_path / "gnome").mkdir()
    with gnome_xwayland(tmp_path / "gnome") as server:
        yield server


@pytest.fixture(params=["isolated"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_xwayland_has_no_security_extension_and_x11_true_runs_isolated(
        session: Session, xserver: XServer) -> None:
    import subprocess

    extensions = subprocess.run(["xdpyinfo", "-queryExtensions"], env=xserver.client_env(),
                                capture_output=True, text=True, check=True).stdout
    assert "SECURITY" not in extensions and "XTEST" in extensions
    profile = write_variant(session.profiles, ["xdpyinfo"], 'x11 = true\nnetwork = "none"\n')
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    # The sandbox's display is its own nested server's, never Xwayland's.
    shown = [line for line in result.stdout.splitlines() if line.startswith("name of display:")]
    assert shown and shown[0] != f"name of display:    {xserver.display}", result.stdout
    assert "trusted" not in result.stderr


def test_a_trusted_profile_is_refused_on_xwayland_naming_x11_true(
        session: Session, xserver: XServer) -> None:
    profile = write_variant(session.profiles, ["xdpyinfo"], TRUSTED_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 125, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("sandboxapp:")]
    assert len(said) == 1 and "no SECURITY extension" in said[0], result.stderr
    assert "x11 = true" in result.stderr and "Traceback" not in result.stderr
    # Refused before anything was made.
    assert not (session.image_dir / ".layers" / NAME).exists()
    assert not list(session.run_dir.glob("*.json"))
