"""The shipped Firefox profile, built for real, on a desktop-like X server (opt-in: slow)."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.harness import (
    SoundServer,
    XServer,
    desktop_portal,
    peak_level,
    recording,
    require_programs,
    screenshot,
    write_tone,
)
from tests.integration.conftest import REPO
from tests.integration.launching import Session

ARTIFACTS = Path(os.environ.get("SANDBOXAPP_TEST_ARTIFACTS", "/tmp/sandboxapp-test-artifacts"))
TITLE = "sandboxapp bookmark test"
SECOND_TITLE = "sandboxapp second page"
AUDIO_TITLE = "sandboxapp audio test"


@pytest.fixture
def web_page(tmp_path: Path) -> Iterator[str]:
    """A page served on the host's loopback (the firefox profile shares the host's network)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(
        f"<html><head><title>{TITLE}</title></head>"
        "<body><h1>Hello from the host</h1><p>served to a sandboxed Firefox</p></body></html>"
    )
    (www / "second.html").write_text(
        f"<html><head><title>{SECOND_TITLE}</title></head><body>opened by a second launch"
        "</body></html>"
    )
    # A page whose sound starts at the user's click (Firefox plays nothing audible before one).
    write_tone(www / "tone.wav", seconds=3.0)
    (www / "audio.html").write_text(
        f"<html><head><title>{AUDIO_TITLE}</title></head><body style='height:100vh'>"
        "<audio id='tone' src='tone.wav' preload='auto'></audio><p>click to play</p>"
        "<script>document.onclick = () => document.getElementById('tone').play();</script>"
        "</body></html>"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()


def xdotool(server: XServer, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=server.client_env(), capture_output=True,
                          text=True, check=False).stdout


def wait_for_window(server: XServer, name: str, launch: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = xdotool(server, "search", "--onlyvisible", "--name", name).split()
        if found:
            return found[-1]
        assert launch.poll() is None, launch.stderr.read() if launch.stderr else ""
        time.sleep(0.5)
    raise AssertionError(f"no window named {name!r} appeared")


def window_icon(server: XServer, window: str) -> list[int]:
    """The window's _NET_WM_ICON on the user's display, as a taskbar reads it."""
    from sandboxapp.host.display import Display, XAccess
    from sandboxapp.host.xconnection import connection

    with connection(XAccess(Display(server.number), str(server.xauthority))) as display:
        reply = display.create_resource_object("window", int(window)).get_full_property(
            display.intern_atom("_NET_WM_ICON"), 0)
        return list(reply.value) if reply is not None else []


def image_icon(image_dir: Path, side: int) -> list[int]:
    """Firefox's own icon of that size in the pristine image, as ARGB cardinals."""
    from PIL import Image

    path = (image_dir / "firefox/rootfs/usr/share/icons/hicolor" / f"{side}x{side}"
            / "apps/firefox-esr.png")
    with Image.open(path) as image:
        data = image.convert("RGBA").tobytes("raw", "BGRA")
    return list(memoryview(data).cast("I"))


def firefox_profile(session: Session) -> Path:
    root = session.persist_dir("/root/.config/mozilla", name="firefox") / "firefox"
    profiles = sorted(root.glob("*.default-esr"))
    assert len(profiles) == 1, profiles
    return profiles[0]


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def bookmarks(profile: Path) -> list[tuple[str, str]]:
    with read_only(profile / "places.sqlite") as db:
        return db.execute("SELECT b.title, p.url FROM moz_bookmarks b "
                          "JOIN moz_places p ON b.fk = p.id").fetchall()


def zoom_for(profile: Path, site: str) -> float | None:
    with read_only(profile / "content-prefs.sqlite") as db:
        row = db.execute(
            "SELECT p.value FROM prefs p JOIN groups g ON p.groupID = g.id "
            "JOIN settings s ON p.settingID = s.id "
            "WHERE g.name = ? AND s.name = 'browser.content.full-zoom'", (site,)).fetchone()
    return float(row[0]) if row else None


@pytest.mark.slow
def test_firefox_shows_its_window_and_keeps_bookmarks_and_settings(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    web_page: str,
) -> None:
    require_programs("xdotool")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=4321)

    # First run: the page shows; the user bookmarks it (Ctrl+D, Enter) and zooms in twice.
    first = session.start("firefox", "--", web_page)
    window = wait_for_window(xserver, TITLE, first)
    # Its window carries Firefox's icon from the pristine image, every size the image has,
    # smallest first (a taskbar's, a window switcher's).
    icon = window_icon(xserver, window)
    sides = []
    while icon:
        side, height = icon[:2]
        assert icon[2:2 + side * height] == image_icon(firefox_image_dir, side)
        sides.append(side)
        icon = icon[2 + side * height:]
    assert sides == [16, 32, 48, 64, 128]
    time.sleep(3)
    width, height, colours = screenshot(xserver, ARTIFACTS / "firefox-first-run.png")
    assert colours > 20, "the screen is blank"
    geometry = xdotool(xserver, "getwindowgeometry", window)
    assert "Geometry" in geometry
    xdotool(xserver, "mousemove", str(width // 3), str(height // 3))
    time.sleep(0.5)
    xdotool(xserver, "key", "--clearmodifiers", "ctrl+d")
    time.sleep(2)
    xdotool(xserver, "key", "Return")
    time.sleep(1)
    xdotool(xserver, "key", "ctrl+plus")
    time.sleep(1)
    xdotool(xserver, "key", "ctrl+plus")
    time.sleep(2)
    screenshot(xserver, ARTIFACTS / "firefox-bookmarked.png")
    first.terminate()  # the launcher stops Firefox gracefully
    assert first.wait(timeout=60) == 143

    profile = firefox_profile(session)
    assert profile.stat().st_uid == 4321  # the desktop user's own files
    assert (TITLE, web_page) in bookmarks(profile)
    assert zoom_for(profile, "127.0.0.1") == pytest.approx(1.2)

    # Second run, from the pristine image again: the same profile, bookmark and zoom are there.
    second = session.start("firefox", "--", web_page)
    wait_for_window(xserver, TITLE, second)
    time.sleep(3)
    _, _, colours = screenshot(xserver, ARTIFACTS / "firefox-second-run.png")
    assert colours > 20
    # Launched again while it runs (the menu entry clicked again, a link opened): the URL goes
    # to the running sandboxed Firefox over the sandbox's own session bus, as a new tab.
    joined = session.run("firefox", "--", web_page.replace("index.html", "second.html"),
                         timeout=60)
    assert joined.returncode == 0, joined.stderr
    wait_for_window(xserver, SECOND_TITLE, second)
    time.sleep(2)
    screenshot(xserver, ARTIFACTS / "firefox-joined.png")
    ps = session.sandboxapp("ps", "--json")
    assert [s["profile"] for s in __import__("json").loads(ps.stdout)] == ["firefox"]
    second.terminate()
    assert second.wait(timeout=60) == 143
    assert firefox_profile(session) == profile
    assert (TITLE, web_page) in bookmarks(profile)
    assert zoom_for(profile, "127.0.0.1") == pytest.approx(1.2)
    assert not (session.image_dir / ".layers" / "firefox").exists()


@pytest.mark.slow
def test_firefox_opens_after_every_kind_of_interruption_and_keeps_its_bookmark(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    web_page: str,
) -> None:
    """Launch, wait for the window, interrupt: Ctrl-C to the launcher's process group,
    SIGTERM, `sandboxapp stop`, SIGKILL of the launcher; eight times. Each next launch maps
    its window, and the bookmark made in the first run stays."""
    require_programs("xdotool")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=4321)
    ways = ["SIGINT to the group", "SIGTERM", "stop", "SIGKILL"]
    for cycle in range(8):
        launch = session.start("firefox", "--", web_page, own_group=True)
        try:
            wait_for_window(xserver, TITLE, launch)
            time.sleep(1)
            _, _, colours = screenshot(xserver, ARTIFACTS / f"firefox-cycle-{cycle}.png")
            assert colours > 20, f"cycle {cycle}: the screen is blank"
            if cycle == 0:
                time.sleep(2)
                xdotool(xserver, "key", "--clearmodifiers", "ctrl+d")
                time.sleep(2)
                xdotool(xserver, "key", "Return")
                time.sleep(2)
            way = ways[cycle % len(ways)]
            if way == "SIGINT to the group":
                os.killpg(launch.pid, signal.SIGINT)
                assert launch.wait(timeout=60) == 130
            elif way == "SIGTERM":
                launch.terminate()
                assert launch.wait(timeout=60) == 143
            elif way == "stop":
                stopped = session.sandboxapp("stop", "firefox")
                assert stopped.returncode == 0, stopped.stderr
                assert launch.wait(timeout=60) == 143
            else:
                launch.kill()
                launch.wait(timeout=60)
            # The container dies with its launcher, an instant later: its window goes then.
            deadline = time.monotonic() + 30
            while xdotool(xserver, "search", "--onlyvisible", "--name", TITLE).split():
                assert time.monotonic() < deadline, f"cycle {cycle}: the window stayed"
                time.sleep(0.2)
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
        if cycle == 0:
            assert (TITLE, web_page) in bookmarks(firefox_profile(session))
    cleanup = session.sandboxapp("cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert (TITLE, web_page) in bookmarks(firefox_profile(session))

    # The state the interrupted runs of an earlier release left (Firefox counts every run
    # killed while it started as a startup crash, and past three restarts itself in safe
    # mode): it still shows a window, its own offer to troubleshoot.
    profile = firefox_profile(session)
    with (profile / "prefs.js").open("a") as prefs:
        prefs.write('user_pref("toolkit.startup.recent_crashes", 9);\n')
    launch = session.start("firefox", "--", web_page)
    try:
        wait_for_window(xserver, "Firefox", launch)
        time.sleep(1)
        screenshot(xserver, ARTIFACTS / "firefox-after-startup-crashes.png")
    finally:
        launch.terminate()
        launch.wait(timeout=60)
    assert (TITLE, web_page) in bookmarks(firefox_profile(session))


# What Firefox opens by itself on a profile's first runs: its privacy notice and welcome.
FIREFOX_OWN_PAGES = ("https://www.mozilla.org/", "about:welcome")


def session_windows(profile: Path) -> list[list[str]]:
    """The windows Firefox saved at its last quit, each as the URLs of its tabs (but the
    pages Firefox opens by itself)."""
    import json

    import lz4.block

    data = (profile / "sessionstore.jsonlz4").read_bytes()
    assert data[:8] == b"mozLz40\0"
    state = json.loads(lz4.block.decompress(data[8:]))
    urls = [[tab["entries"][tab["index"] - 1]["url"] for tab in window["tabs"]]
            for window in state["windows"]]
    return [[url for url in window if not url.startswith(FIREFOX_OWN_PAGES)] for window in urls]


def shut_down_by_itself(profile: Path) -> bool:
    """Whether Firefox's last run went through its own shutdown, to its last phase."""
    import json

    phases = json.loads((profile / "sessionCheckpoints.json").read_text())
    return bool(phases.get("profile-before-change"))


# Each way a user stops a sandbox, the launch's exit status it gives: the launcher's own
# signal's (`sandboxapp stop` sends SIGTERM).
STOP_WAYS = {"SIGINT to the group": 130, "stop": 143, "SIGTERM": 143, "SIGHUP": 129}


def stop_by(way: str, launch: subprocess.Popen[str], session: Session,
            env: dict[str, str] | None = None) -> int:
    """Stop a running launch of the firefox profile one of STOP_WAYS; the status it must
    end with."""
    if way == "SIGINT to the group":
        os.killpg(launch.pid, signal.SIGINT)
    elif way == "stop":
        stopped = session.sandboxapp("stop", "firefox", env=env)
        assert stopped.returncode == 0, stopped.stderr
    else:
        launch.send_signal(signal.SIGTERM if way == "SIGTERM" else signal.SIGHUP)
    return STOP_WAYS[way]


@pytest.mark.slow
def test_every_way_of_stopping_is_firefoxs_own_quit_and_keeps_its_windows_and_tabs(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    web_page: str,
) -> None:
    """Eight cycles of launch, window, stop at once: Ctrl-C to the launcher's process group,
    `sandboxapp stop`, SIGTERM and SIGHUP, twice each. Every stop is Firefox's own shutdown
    (the session manager asks it to quit), never a crash: every launch shows the browser, never
    the offer to troubleshoot, and the two windows of two tabs each opened in the first run,
    with "open previous windows and tabs" set, are there in the last."""
    require_programs("xdotool")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=4321)
    second = web_page.replace("index.html", "second.html")
    tabs = [[web_page, second], [f"{web_page}?2", f"{second}?2"]]
    ways = list(STOP_WAYS)
    for cycle in range(8):
        # The first run opens its windows; the next ones restore them.
        launch = session.start("firefox", *(["--", *tabs[0]] if cycle == 0 else []),
                               own_group=True)
        try:
            # Its title is that of the restored window's tab that was last in front.
            wait_for_window(xserver, "sandboxapp (bookmark test|second page)", launch)
            if cycle == 0:
                for args in (["--new-window", tabs[1][0]], [tabs[1][1]]):
                    joined = session.run("firefox", "--", *args, timeout=60)
                    assert joined.returncode == 0, joined.stderr
                    time.sleep(2)
            time.sleep(1)
            _, _, colours = screenshot(xserver, ARTIFACTS / f"firefox-stop-{cycle}.png")
            assert colours > 20, f"cycle {cycle}: the screen is blank"
            way = ways[cycle % len(ways)]
            started = time.monotonic()
            expected = stop_by(way, launch, session)
            status = launch.wait(timeout=60)
            assert status == expected, launch.stderr.read() if launch.stderr else ""
            took = time.monotonic() - started
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
        profile = firefox_profile(session)
        assert shut_down_by_itself(profile), f"cycle {cycle} ({way}): Firefox crashed"
        print(f"cycle {cycle}: {way} stopped Firefox in {took:.2f} s")
        if cycle == 0:
            assert session_windows(profile) == tabs
            with (profile / "user.js").open("a") as prefs:
                prefs.write('user_pref("browser.startup.page", 3);\n')
    assert session_windows(firefox_profile(session)) == tabs


@pytest.mark.slow
def test_a_logout_is_firefoxs_own_shutdown_before_the_desktop_ends_its_display(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    web_page: str,
) -> None:
    """The desktop's session manager (the launcher's own XSMP manager, served as a desktop's)
    asks its programs to quit: the launcher, registered there, stops the sandbox as a logout
    does, and leaves the desktop's session only once Firefox has shut itself down, so the
    desktop ends its display only then."""
    from sandboxapp.host.sessionmanager import serving

    session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=4321)
    session.session_manager = tmp_path / "desktop-session"
    with serving(session.session_manager) as desktop:
        launch = session.start("firefox", "--", web_page, own_group=True)
        try:
            wait_for_window(xserver, TITLE, launch)
            assert desktop.registered() == 1
            asked = time.monotonic()
            assert desktop.ask_to_quit()
            # As a desktop's session manager does: wait for its clients to leave, then end.
            while desktop.registered():
                assert time.monotonic() - asked < 30, "the launcher stayed in the session"
                time.sleep(0.05)
            # By then Firefox has shut itself down, and is gone.
            assert shut_down_by_itself(firefox_profile(session))
            assert not [p for p in psutil.process_iter(["name"])
                        if p.info["name"] == "firefox-esr"]
            assert launch.wait(timeout=60) == 128 + signal.SIGHUP
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
    print(f"a logout ended Firefox in {time.monotonic() - asked:.2f} s")


@pytest.mark.slow
def test_firefox_loads_a_page_typed_into_its_url_bar_and_plays_its_sound(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    web_page: str,
) -> None:
    """On an X server of its own, with its sound through the filtering proxy: the user types
    an address, the page loads, a click plays its <audio>, and the host's sink hears it."""
    require_programs("xdotool", "parec")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=4321)
    launch = session.start("firefox", "--", web_page)
    try:
        wait_for_window(xserver, TITLE, launch)
        time.sleep(2)
        xdotool(xserver, "key", "--clearmodifiers", "ctrl+l")
        time.sleep(0.5)
        xdotool(xserver, "type", "--delay", "30", web_page.replace("index.html", "audio.html"))
        xdotool(xserver, "key", "Return")
        window = wait_for_window(xserver, AUDIO_TITLE, launch)
        time.sleep(2)
        width, height, _ = screenshot(xserver, ARTIFACTS / "firefox-audio-page.png")
        capture = tmp_path / "capture.raw"
        with recording(soundserver, capture):
            xdotool(xserver, "mousemove", "--window", window, str(width // 3),
                    str(height // 2), "click", "1")
            time.sleep(4)
        assert peak_level(capture.read_bytes()) > 5000
    finally:
        launch.terminate()
        launch.wait(timeout=60)


UPLOAD_TITLE = "sandboxapp upload test"


@pytest.fixture
def upload_site(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A page on the host's loopback with a file input that fills it: the name and size of
    the file chosen reach the server, and then the page asks for a download."""
    heard: list[str] = []
    page = (f"<html><head><title>{UPLOAD_TITLE}</title></head><body style='margin:0'>"
            "<input type='file' id='f' style='width:100vw;height:100vh'>"
            "<script>document.getElementById('f').onchange = (e) => {"
            " const f = e.target.files[0];"
            " fetch('/report?' + encodeURIComponent(f.name + ' ' + f.size))"
            "   .then(() => { location = '/download'; }); };</script></body></html>")

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/report?"):
                from urllib.parse import unquote

                heard.append(unquote(self.path.split("?", 1)[1]))
                body, kind, extra = b"ok", "text/plain", {}
            elif self.path == "/download":
                body, kind = b"downloaded bytes\n", "application/octet-stream"
                extra = {"Content-Disposition": 'attachment; filename="report.bin"'}
            else:
                body, kind, extra = page.encode(), "text/html", {}
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", heard
    finally:
        server.shutdown()


@pytest.mark.slow
def test_firefox_uploads_the_file_chosen_in_the_desktops_dialog_and_downloads_where_the_user_looks(
    tmp_path: Path, firefox_image_dir: Path, xserver: XServer, soundserver: SoundServer,
    upload_site: tuple[str, list[str]],
) -> None:
    """The real Firefox image on a desktop with xdg-desktop-portal's GTK dialog: a click on a
    page's <input type=file> shows the desktop's dialog (Firefox asks the portal on its own
    bus); the file chosen there reaches the page, its name and size; the download that
    follows lands in the user's download directory, in Firefox's own folder, theirs."""
    require_programs("xdotool")
    url, heard = upload_site
    with desktop_portal(tmp_path, xserver) as portal:
        user = portal.user
        session = Session(tmp_path, firefox_image_dir, xserver, soundserver, sudo_uid=user.uid)
        photo = user.home / "photo.jpg"
        photo.write_bytes(b"\xff\xd8" + b"x" * 1234)
        os.chown(photo, user.uid, user.gid)
        launch = subprocess.Popen(
            [sys.executable, "-m", "sandboxapp", "run", "firefox", "--", url],
            env={**session.env(), **portal.env()}, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            window = wait_for_window(xserver, UPLOAD_TITLE, launch)
            time.sleep(3)
            xdotool(xserver, "windowfocus", "--sync", window)
            width, height, _ = screenshot(xserver, ARTIFACTS / "firefox-upload-page.png")
            xdotool(xserver, "mousemove", "--window", window, str(width // 3),
                    str(height // 2), "click", "1")
            dialog, name = portal.dialog()
            # The dialog says whose request it is.
            assert name.startswith("firefox (sandbox): "), name
            screenshot(xserver, ARTIFACTS / "firefox-upload-dialog.png")
            portal.type_path(dialog, str(photo))
            deadline = time.monotonic() + 60
            saved = session.downloads / "Firefox (sandbox)" / "report.bin"
            while time.monotonic() < deadline and not (heard and saved.exists()):
                assert launch.poll() is None, launch.stderr.read() if launch.stderr else ""
                time.sleep(0.5)
            screenshot(xserver, ARTIFACTS / "firefox-uploaded.png")
            if heard != ["photo.jpg 1236"]:
                launch.terminate()
                _, err = launch.communicate(timeout=60)
                raise AssertionError(f"the page heard {heard}; the launch said: {err}")
            time.sleep(2)  # Firefox renames its .part file when the download is done
            assert saved.read_bytes() == b"downloaded bytes\n"
            assert (saved.stat().st_uid, saved.parent.stat().st_uid) == (user.uid, user.uid)
        finally:
            launch.terminate()
            launch.wait(timeout=60)
