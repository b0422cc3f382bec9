"""The clipboard between the user's display and a sandbox's nested one, by Wayland's rule: text
crosses only in answer to the user, never while another window has the focus.

- Inward: when the user gives the sandbox's window the focus, what the user's clipboard holds
  (text) is offered inside, in place of what was offered before. A focus the window got by
  being mapped (the sandbox's first window) does not count.
- Outward: what a program inside copies while the user has the sandbox's window focused is
  offered to the user's desktop.

Only text crosses (UTF-8; STRING and TEXT are served from it), at most MAX_TEXT bytes, read
whole in one property (a transfer the other side splits up, INCR, is left out). The launcher,
a client of both servers, holds the offer in its own memory: no program on either side talks
to the other. Runs on the nested display's thread (host/nested.py), which hands it the events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxapp.profile.model import Clipboard

if TYPE_CHECKING:
    from Xlib.display import Display as XDisplay

# The most text that crosses, in bytes: it fits one X request without BIG-REQUESTS.
MAX_TEXT = 192 * 1024
# Pastes answered per second and side (and as many at once): a program that asks for the text
# over and over makes the launcher copy it no faster than this; the rest are refused.
ANSWERS_PER_SECOND = 10.0
PROPERTY = "SANDBOXAPP_CLIPBOARD"


@dataclass(frozen=True)
class Directions:
    inward: bool  # the user's clipboard into the sandbox
    outward: bool  # the sandbox's copies out to the user's desktop

    @classmethod
    def of(cls, clipboard: Clipboard) -> Directions:
        """The profile's clipboard key."""
        return cls(inward=clipboard in (Clipboard.FOCUS, Clipboard.IN),
                   outward=clipboard in (Clipboard.FOCUS, Clipboard.OUT))


class _Side:
    """One server's end: a window of the launcher's that asks for and owns CLIPBOARD there,
    and the text it offers while it owns it."""

    def __init__(self, display: XDisplay, window: Any) -> None:
        from Xlib import Xatom

        self.display = display
        self.window = window
        self.clipboard = display.intern_atom("CLIPBOARD")
        self.utf8 = display.intern_atom("UTF8_STRING")
        self.text_atom = display.intern_atom("TEXT")
        self.targets = display.intern_atom("TARGETS")
        self.incr = display.intern_atom("INCR")
        self.property = display.intern_atom(PROPERTY)
        self.string = Xatom.STRING
        self.offered: bytes | None = None  # what this side is offered while we own CLIPBOARD
        self.asked = False  # an answer to our ask is awaited: only then is one taken
        self.allowance = ANSWERS_PER_SECOND
        self.counted = time.monotonic()

    def ask(self) -> None:
        """Ask this side's clipboard owner for its text (the answer: SelectionNotify)."""
        from Xlib import X

        self.asked = True
        self.window.convert_selection(self.clipboard, self.utf8, self.property, X.CurrentTime)

    def received(self, event: Any) -> bytes | None:
        """The text a SelectionNotify brought, when it is text of a size that may cross."""
        from Xlib import X

        asked, self.asked = self.asked, False
        if not asked or event.property == X.NONE or event.selection != self.clipboard:
            return None
        # Read at most MAX_TEXT (and a word): a larger text stays where it is.
        found = self.window.get_property(self.property, X.AnyPropertyType, 0,
                                         MAX_TEXT // 4 + 1, delete=True)
        if (found is None or found.format != 8 or found.property_type == self.incr
                or found.bytes_after):
            return None
        value = found.value
        data = value if isinstance(value, bytes) else str(value).encode()
        if len(data) > MAX_TEXT:
            return None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return data

    def offer(self, text: bytes | None) -> None:
        """Own CLIPBOARD here with text; with None, offer nothing (give it up, if ours)."""
        from Xlib import X

        self.offered = text
        if text is not None:
            self.window.set_selection_owner(self.clipboard, X.CurrentTime)
        elif self.display.get_selection_owner(self.clipboard) == self.window:
            self.window.set_selection_owner(self.clipboard, X.NONE, X.CurrentTime)

    def owns(self) -> bool:
        return self.offered is not None

    def serve(self, event: Any) -> bool:
        """A paste from our offer, or the loss of it (a program here copied): handled."""
        from Xlib import X

        if event.type == X.SelectionRequest and event.owner == self.window:
            self.answer(event)
            return True
        if event.type == X.SelectionClear and event.window == self.window:
            self.offered = None
            return True
        return False

    def answer(self, event: Any) -> None:
        """A program of this side pastes: it gets the offered text, or a refusal."""
        from Xlib import X, Xatom, error
        from Xlib.protocol import event as events

        requestor = event.requestor
        target, prop = event.target, event.property or event.target
        ignore = error.CatchError()
        text = self.offered if event.selection == self.clipboard else None
        now = time.monotonic()
        self.allowance = min(ANSWERS_PER_SECOND,
                             self.allowance + (now - self.counted) * ANSWERS_PER_SECOND)
        self.counted = now
        if self.allowance < 1:
            text = None
        else:
            self.allowance -= 1
        if text is None or target not in (self.utf8, self.string, self.text_atom, self.targets):
            prop = X.NONE
        elif target == self.targets:
            requestor.change_property(prop, Xatom.ATOM, 32,
                                      [self.targets, self.utf8, self.string, self.text_atom],
                                      onerror=ignore)
        elif target == self.string:
            requestor.change_property(prop, self.string, 8, text.decode().encode(
                "latin-1", errors="replace"), onerror=ignore)
        else:
            requestor.change_property(prop, self.utf8, 8, text, onerror=ignore)
        requestor.send_event(events.SelectionNotify(
            time=event.time, requestor=requestor, selection=event.selection, target=target,
            property=prop), onerror=ignore)


def _id(resource: Any) -> int:
    """A window's id, whether python-xlib gave it as a Window or as a number."""
    return int(getattr(resource, "id", resource))


class ClipboardBridge:
    """The two ends, and the rule between them."""

    def __init__(self, directions: Directions, host: XDisplay, host_window: Any,
                 nested: XDisplay, nested_window: Any, refresh: Callable[[], object]) -> None:
        self.directions = directions
        # Handles what the user's server has sent (its focus events): called before text
        # crosses, so that a focus the user has moved away meanwhile is known.
        self.refresh = refresh
        self.host = _Side(host, host_window)
        self.nested = _Side(nested, nested_window)
        self.user_focus = False  # the user has given the sandbox's window the focus
        # A program inside copied since the user's clipboard was asked for: what comes back
        # would take the place of the newer copy, and is dropped.
        self.copied_inside = False

    def start(self) -> None:
        """Hear of every new owner of the nested server's CLIPBOARD (XFIXES)."""
        from Xlib.ext import xfixes

        nested = self.nested.display
        nested.xfixes_query_version()
        nested.xfixes_select_selection_input(nested.screen().root, self.nested.clipboard,
                                             xfixes.XFixesSetSelectionOwnerNotifyMask)

    def focused(self, by_user: bool) -> None:
        """The sandbox's window got the focus; by_user: not by its own mapping."""
        self.user_focus = by_user
        if by_user and self.directions.inward and not self.host.owns():
            self.copied_inside = False
            self.host.ask()

    def unfocused(self) -> None:
        self.user_focus = False

    def host_event(self, event: Any) -> bool:
        """An event of the user's server for the bridge: handled."""
        from Xlib import X

        if event.type == X.SelectionNotify and event.requestor == self.host.window:
            text = self.host.received(event)
            if self.user_focus and not self.copied_inside:
                self.nested.offer(text)
            return True
        return self.host.serve(event)

    def nested_event(self, event: Any) -> bool:
        """An event of the nested server for the bridge: handled."""
        from Xlib import X

        # XFIXES's event (python-xlib makes a class of its own per connection: its codes tell)
        if (event.type, getattr(event, "sub_code", None)) == getattr(
                self.nested.display.extension_event, "SetSelectionOwnerNotify", None):
            owner = _id(event.owner)
            if event.selection == self.nested.clipboard and owner not in (
                    X.NONE, self.nested.window.id):
                self.copied_inside = True
                if self.user_focus and self.directions.outward:
                    self.nested.ask()
            return True
        if event.type == X.SelectionNotify and event.requestor == self.nested.window:
            text = self.nested.received(event)
            if text is not None:
                self.refresh()
                if self.user_focus:
                    self.host.offer(text)
            return True
        return self.nested.serve(event)
