"""A root launch's container, started before the rest of sandboxapp has loaded.

Starting Python and loading sandboxapp takes about as long as systemd-nspawn takes to start a
container (BENCHMARKS.md), so a launch that did one after the other took twice as long as it
need. When root runs again the very command it ran before (the same words, working directory,
environment and user; the same profile files and image, by inode and change time), the container
side of that launch is started from the ticket the earlier one left: the launch record, the
layer, the checked binds and nspawn, with the app held at its gate. Only the interpreter's own
modules are loaded for that. The launcher then loads, works the launch out afresh, and goes on
with this container only if the ticket says exactly what it would have done; then it makes the
grants and opens the gate. Anything missing, changed or failing here: whatever was made is
undone, and the launch goes the ordinary way.

Tickets are root's, in root's run directory, and only read when root owns them and nobody else
can write them or the directory they are in: they hold the command that root runs.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal, without the enum it loads
import fcntl
import marshal
import os
import stat
import time

from sandboxapp import mountcalls, nofollow
from sandboxapp.procstat import start_ticks

# typing and collections.abc cost milliseconds to import: for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

TICKET_VERSION = 1
# The environment a launch is worked out from (README, "Files and environment"). A variable
# missing here would not make a launch wrong, only its prestart wasted: the launcher compares
# what it works out with the ticket before the app starts; a terminal's own variables (OLDPWD,
# SHLVL, ...) are left out so that they do not cost root's launches from it their ticket.
KEY_ENVIRONMENT = ("SANDBOXAPP_IMAGE_DIR", "SANDBOXAPP_RUN_DIR", "DISPLAY", "XAUTHORITY",
                   "PULSE_SERVER", "PULSE_COOKIE", "XDG_RUNTIME_DIR", "XDG_DATA_HOME",
                   "XDG_STATE_HOME", "XDG_CONFIG_HOME", "HOME", "SUDO_UID", "SUDO_GID", "TERM")
# The tickets kept: `run firefox -- URL` files one per URL; the oldest go.
MAX_TICKETS = 64
DEFAULT_RUN_DIR = "/run/sandboxapp"
# Stand-ins in a ticket's record text: the launcher's and the container's pid and start.
LAUNCHER_PID, LAUNCHER_STARTED = "@launcher-pid@", "@launcher-started@"
CONTAINER_PID, CONTAINER_STARTED = "@pid@", "@started@"


class NotPrestarted(Exception):
    """The launch cannot be prestarted; it goes the ordinary way."""


def run_dir(environ: Mapping[str, str]) -> str:
    value = environ.get("SANDBOXAPP_RUN_DIR", "")
    return value if value.startswith("/") else DEFAULT_RUN_DIR


def ticket_path(directory: str, words: Sequence[str]) -> str:
    """Where the ticket for `sandboxapp run WORDS...` lives: named by a digest of the words
    (the ticket holds them, and is only used for the very same)."""
    # zlib is built into the interpreter (hashlib would load OpenSSL first); a clash of
    # names only costs a slower launch.
    import zlib

    data = "\0".join(words).encode("utf-8", "surrogateescape")
    return os.path.join(directory, "tickets", f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}")


def identity(path: str) -> tuple[int, ...] | None:
    """What changes when a file is edited or replaced: device, inode, size, times."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def launch_key(words: Sequence[str], environ: Mapping[str, str],
               watched: Sequence[str]) -> tuple[Any, ...]:
    """Everything a launch is worked out from, as far as it can be told without loading
    sandboxapp: two launches with the same key get the same ticket."""
    return (TICKET_VERSION, tuple(words), os.getcwd(), os.geteuid(), os.getuid(),
            tuple(environ.get(name) for name in KEY_ENVIRONMENT),
            tuple(identity(p) for p in watched))


def _owned_by_root(fd: int) -> bool:
    st = os.fstat(fd)
    return st.st_uid == 0 and not st.st_mode & 0o022


def read_ticket(path: str) -> dict[str, Any]:
    try:
        directory = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC)
        try:
            fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=directory)
        finally:
            trusted_directory = _owned_by_root(directory)
            os.close(directory)
    except OSError:
        raise NotPrestarted("no ticket") from None
    try:
        if not (trusted_directory and _owned_by_root(fd) and stat.S_ISREG(os.fstat(fd).st_mode)):
            raise NotPrestarted("a ticket that is not root's alone")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            ticket = marshal.load(stream)
    except (EOFError, ValueError, TypeError):
        raise NotPrestarted("an unreadable ticket") from None
    finally:
        os.close(fd)
    if not isinstance(ticket, dict) or ticket.get("version") != TICKET_VERSION:
        raise NotPrestarted("a ticket of another version")
    return ticket


def write_ticket(path: str, ticket: dict[str, Any]) -> None:
    """Atomically, in a directory only root can write."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        return
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "wb") as stream:
        marshal.dump(ticket, stream)
    os.replace(temporary, path)
    names = os.listdir(directory)
    if len(names) > MAX_TICKETS:
        by_age = sorted(names, key=lambda name: os.stat(os.path.join(directory, name)).st_mtime)
        for name in by_age[:-MAX_TICKETS]:
            os.unlink(os.path.join(directory, name))


def make_gate(path: str) -> int:
    """The FIFO the app waits at inside (launchplan.GATE), and the launcher's end of it, to be
    held open while the container runs: a line written to it lets the app start."""
    os.mkfifo(path, 0o600)
    # The app reads it as the container's root, a UID that is nobody here.
    os.chmod(path, 0o604)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


class Prestarted:
    """A container started from a ticket, its app at the gate; what the launcher adopts."""

    def __init__(self, ticket: dict[str, Any], lock_fd: int) -> None:
        self.ticket = ticket
        self.lock_fd = lock_fd
        self.record_path: str = ticket["record"]
        self.layer: str = ticket["layer"]
        self.mounted: list[str] = []
        self.made_layer = False
        self.gate_fd: int | None = None
        self.pid: int | None = None
        self.started: float | None = None
        self.stdout_fd: int | None = None
        self.stderr_fd: int | None = None
        # Set once the launcher has taken it over (its record, lock and container).
        self.adopted = False
        # Stop signals that came before the launcher could take them (catch_stop_signals).
        self.signals: list[int] = []
        self._previous_handlers: dict[int, Any] = {}

    # -- the steps ----------------------------------------------------------------------------

    def _save_record(self) -> None:
        marks = {
            LAUNCHER_PID: str(os.getpid()),
            LAUNCHER_STARTED: repr(float(start_ticks(os.getpid()) or 0)),
            CONTAINER_PID: "null" if self.pid is None else str(self.pid),
            CONTAINER_STARTED: "null" if self.started is None else repr(self.started),
        }
        text = self.ticket["record_text"]
        for mark, value in marks.items():
            text = text.replace(f'"{mark}"', value)
        nofollow.replace_private(self.record_path, text)

    def _make_layer(self) -> None:
        ticket = self.ticket
        layer = self.layer
        if not os.path.isdir(os.path.dirname(layer)):
            raise NotPrestarted("no layer directory yet")
        os.mkdir(layer, 0o700)  # a leftover layer: the ordinary launch removes it
        self.made_layer = True
        with open(f"{layer}/layer.json", "w", encoding="utf-8") as stream:
            stream.write(ticket["marker"])
        self.mounted.append(mountcalls.mount_layer(layer, ticket["rootfs"], volatile=True))

    def _stage(self) -> None:
        uid, gid = self.ticket["user"]
        staging = f"{self.layer}/binds"
        os.mkdir(staging, 0o700)
        for index, (path, trusted, file_type, create_mode) in enumerate(self.ticket["stage"]):
            if create_mode is not None:
                # The sound directory, as the launcher makes it (safepath.ensure_user_dir).
                nofollow.ensure_dir(path, uid, gid, create_mode, exact_mode=True)
            target = f"{staging}/{index}"
            mountcalls.stage_owned(path, uid, gid, target, trusted=trusted,
                                   file_type=file_type)
            self.mounted.insert(0, target)

    def _open_gate_fifo(self) -> None:
        self.gate_fd = make_gate(f"{self.layer}/gate")

    def _spawn(self) -> None:
        # As container.ContainerSide.start spawns it: no input, output through pipes, a
        # session of its own.
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        argv = self.ticket["argv"]
        try:
            self.pid = os.posix_spawnp(
                argv[0], argv, self.ticket["env"], setsid=True,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out_write, 1),
                              (os.POSIX_SPAWN_DUP2, err_write, 2)])
        except OSError:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        self.stdout_fd = out_read
        self.stderr_fd = err_read
        self.started = float(start_ticks(self.pid) or 0)

    def start(self) -> None:
        self.catch_stop_signals()
        self._save_record()
        self._make_layer()
        self._stage()
        self._open_gate_fifo()
        self._spawn()
        self._save_record()

    def catch_stop_signals(self) -> None:
        """From before anything is made until the launcher has loaded and installs its own
        handlers, SIGTERM, SIGHUP and SIGINT are noted, not obeyed at once: the launcher then
        stops the launch in the ordinary way, taking back what this made."""
        for signum in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
            self._previous_handlers[signum] = _signal.signal(signum, self._note_signal)

    def _note_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _release_signals(self) -> None:
        """The handlers as they were, and a signal noted meanwhile delivered again."""
        for signum, previous in self._previous_handlers.items():
            _signal.signal(signum, previous)
        self._previous_handlers = {}
        if self.signals:
            os.kill(os.getpid(), self.signals[0])

    # -- undoing it ---------------------------------------------------------------------------

    def discard(self) -> None:
        """Undo it all and let go of the lock: the launcher did not take it over. What cannot
        be undone here stays in the record, for the next launch to clean up after."""
        try:
            self.undo()
        except OSError:
            pass
        finally:
            os.close(self.lock_fd)
            self._release_signals()

    def close_fds(self) -> None:
        for fd in (self.gate_fd, self.stdout_fd, self.stderr_fd):
            if fd is not None:
                os.close(fd)
        self.gate_fd = self.stdout_fd = self.stderr_fd = None

    def undo(self) -> None:
        """Take back whatever start made, newest first; the lock stays held."""
        if self.pid is not None:
            os.kill(self.pid, _signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None
        self.close_fds()
        for target in self.mounted:
            mountcalls.unmount(target)
        self.mounted = []
        if self.made_layer:
            import shutil

            shutil.rmtree(self.layer)
            self.made_layer = False
        uid = self.ticket["user"][0]
        for path, _, _, create_mode in self.ticket["stage"]:
            if create_mode is not None:
                nofollow.remove_empty_dir(path, uid)  # the sound directory, if made here
        try:  # noqa: SIM105 (contextlib is not loaded yet, and need not be)
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass


def body_of(ticket: dict[str, Any]) -> dict[str, Any]:
    """What a ticket says the launch does (without what says when it applies)."""
    return {k: v for k, v in ticket.items() if k not in ("version", "key", "watched", "expires")}


def attempt(words: Sequence[str], environ: Mapping[str, str]) -> Prestarted | None:
    """`sandboxapp run WORDS...` as root: its container started from a ticket, or None."""
    if os.geteuid() != 0:
        return None
    try:
        ticket = read_ticket(ticket_path(run_dir(environ), words))
        if ticket["key"] != launch_key(words, environ, ticket["watched"]):
            return None
        if ticket["expires"] is not None and time.time() >= ticket["expires"]:
            return None  # the image is due for its update: the ordinary launch makes it
        if os.path.exists(ticket["record"]):
            return None  # a launch left a record: the ordinary launch cleans up after it
        lock_fd = os.open(ticket["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            return None  # running already: the ordinary launch joins it
    except (NotPrestarted, OSError, KeyError, TypeError):
        return None
    prestarted = Prestarted(ticket, lock_fd)
    try:
        prestarted.start()
    except Exception:  # whatever the reason, the ordinary launch can still run
        prestarted.discard()
        return None
    return prestarted
