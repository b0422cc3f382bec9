"""What the file chooser portal reads of a sandbox's request: only the options it knows, by
their types, and the dialog's title without control characters, cut short."""

from __future__ import annotations

from dbus_fast import Variant

from sandboxapp.host.portal import MAX_TITLE, Ask, read_ask, title_for


def test_a_requests_options_count_only_with_their_own_types() -> None:
    ask = read_ask("OpenFile", "Pick\x1b[2J\nme", {
        "multiple": Variant("b", True), "current_name": Variant("s", "x"),
        "modal": Variant("s", "not a boolean"), "unknown": Variant("s", "ignored")})
    assert ask == Ask("open", "Pick[2Jme", multiple=True, current_name=None)
    assert read_ask("OpenFile", "x", {"multiple": Variant("s", "yes")}) == Ask(
        "open", "x", multiple=False, current_name=None)


def test_a_save_gets_a_bare_name_and_a_title_cut_short() -> None:
    ask = read_ask("SaveFile", "t" * 1000, {"current_name": Variant("s", "../../.bashrc"),
                                           "multiple": Variant("b", True)})
    assert isinstance(ask, Ask)
    assert ask.current_name == ".bashrc" and not ask.multiple
    assert len(ask.title) == MAX_TITLE
    assert title_for("firefox", ask).startswith("firefox (sandbox): ")


def test_a_request_for_a_folder_or_without_options_is_refused() -> None:
    assert read_ask("OpenFile", "x", {"directory": Variant("b", True)}) == (
        "it asks for a folder: only files are handed to a sandbox")
    assert isinstance(read_ask("OpenFile", "x", ["not", "a", "dict"]), str)
    assert read_ask("OpenFile", 42, {}) == Ask("open", "", multiple=False, current_name=None)
