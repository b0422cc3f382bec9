"""Opening the desktop user's paths as root without following the user's symlinks.

Each component is opened relative to its parent with O_NOFOLLOW, and ownership is checked on the
open descriptor, not on the name, so a path swapped for a symlink between the check and the use
is refused or harmless. A symlink is only followed where root owns both it and the directory it
is in (a system layout such as /home -> /usr/home), never among the user's files.

safepath.py gives them paths, users and sandboxapp's errors.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Generator, Iterator

from sandboxapp.paths import DEFAULT_IMAGE_DIR, DEFAULT_RUN_DIR

# The system's own places: nothing in them is made the user's.
SYSTEM_ROOTS = ("/etc", "/root", "/boot", "/usr", "/proc", "/sys", "/dev")
# Places a user's profile may never bind or keep data in, whatever their ownership says.
FORBIDDEN_ROOTS = (*SYSTEM_ROOTS, str(DEFAULT_IMAGE_DIR.parent), str(DEFAULT_RUN_DIR))


def below(path: str, roots: tuple[str, ...]) -> str | None:
    """The one of roots that path is or is below, if any."""
    return next((root for root in roots if path == root or path.startswith(root + "/")), None)


class Refused(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"refusing to use {path}: {why}")
        self.path = path
        self.why = why


def open_component(dir_fd: int, name: str, current: str, uid: int, flags: int) -> int:
    """Open one path component below dir_fd, following a symlink only if root owns it and
    the directory it is in."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid != 0 or os.fstat(dir_fd).st_uid != 0:
            raise Refused(current, "it is a symlink among files the user controls")
        fd = os.open(name, flags, dir_fd=dir_fd)
    else:
        fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    owner = os.fstat(fd).st_uid
    if owner not in (0, uid):
        os.close(fd)
        raise Refused(current, f"it belongs to UID {owner}, not to UID {uid}")
    return fd


def components(path: str) -> list[str]:
    """The names in an absolute path without '..' (as pathlib splits it)."""
    names = [name for name in path.split("/") if name not in ("", ".")]
    if not path.startswith("/") or ".." in names:
        raise Refused(path, "not an absolute path without '..'")
    return names


def walk(path: str, uid: int, gid: int, *, create: bool, mode: int = 0o700) -> int:
    """An O_PATH descriptor for the directory `path`, created (as the user's) if asked."""
    names = components(path)
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    current = "/"
    try:
        for name in names:
            current = os.path.join(current, name)
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            try:
                next_fd = open_component(fd, name, current, uid, flags)
            except FileNotFoundError:
                if not create:
                    raise Refused(current, "it does not exist") from None
                system = below(current, SYSTEM_ROOTS) if uid != 0 else None
                if system is not None:
                    raise Refused(current, f"nothing below {system} is made a user's") from None
                os.mkdir(name, mode, dir_fd=fd)
                next_fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
                # O_PATH descriptors cannot fchown: go through /proc/self/fd.
                os.chown(f"/proc/self/fd/{next_fd}", uid, gid)
            except NotADirectoryError:
                raise Refused(current, "it is not a directory") from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def ensure_dir(path: str, uid: int, gid: int, mode: int = 0o700, *,
               exact_mode: bool = False) -> None:
    """Make sure the directory exists and belongs to the user, creating what is missing as
    the user's; exact_mode: and that it has mode, whatever it had."""
    fd = walk(path, uid, gid, create=True, mode=mode)
    try:
        owner = os.fstat(fd).st_uid
        if owner != uid:
            raise Refused(path, f"it belongs to UID {owner}, not to UID {uid}")
        if exact_mode:
            # O_PATH descriptors cannot fchmod: go through /proc/self/fd.
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def remove_empty_dir(path: str, uid: int) -> None:
    """rmdir a directory of the user's that a launch may have created, if it is still empty,
    through its parent opened without following the user's symlinks."""
    parent, name = os.path.split(path)
    try:
        fd = walk(parent, uid, -1, create=False)
    except (Refused, OSError):
        return  # gone already, or not the user's any more: nothing of ours to remove
    try:
        os.rmdir(name, dir_fd=fd)
    except OSError:
        pass  # not empty (the launch put its sound socket there and takes that back), or gone
    finally:
        os.close(fd)


def open_owned(path: str, uid: int, gid: int, *, trusted: bool) -> int:
    """An O_PATH descriptor for path (a directory, file or socket) that is the user's own.

    trusted: the path comes from a root-owned profile; root-owned targets are then allowed.
    """
    names = components(path)
    if not names:
        raise Refused(path, "it is the root directory")
    parent = walk("/" + "/".join(names[:-1]), uid, gid, create=False)
    try:
        fd = open_component(parent, names[-1], path, uid, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused(path, "it does not exist") from None
    finally:
        os.close(parent)
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise Refused(path, "it is a symlink")
        if not trusted:
            if st.st_uid != uid:
                raise Refused(path, f"it belongs to UID {st.st_uid}, not to you (UID {uid})")
            # Root launching for itself (an admin, a test) keeps its data in /root like any
            # user keeps it at home; for everyone else these places are out of bounds.
            forbidden = below(os.readlink(f"/proc/self/fd/{fd}"), FORBIDDEN_ROOTS)
            if forbidden is not None and uid != 0:
                raise Refused(path, f"a user's profile cannot use anything below {forbidden}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def replace_private(path: str, text: str) -> None:
    """Replace the file at path, atomically, with text readable by its owner only (a launch
    record: it names the profile file and the user's identity). The temporary file is made
    anew, never through a symlink."""
    temporary = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}"
    try:  # noqa: SIM105 (contextlib is not imported here: see the module's docstring)
        os.unlink(temporary)  # left by an earlier process of this pid
    except FileNotFoundError:
        pass
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temporary, path)


def remove_user_dir(path: str, uid: int, names: tuple[str, ...]) -> None:
    """Remove the named files from a directory of the user's that a launch made, then the
    directory if that leaves it empty; through descriptors opened without following the user's
    symlinks. Gone already, or not the user's any more: nothing of ours to remove."""
    try:
        fd = walk(path, uid, -1, create=False)
    except (Refused, OSError):
        return
    try:
        for name in names:
            try:  # noqa: SIM105 (contextlib is not imported here: see the module's docstring)
                os.unlink(name, dir_fd=fd)
            except OSError:
                pass  # gone, or not a file (a sandbox put a folder there): it stays
    finally:
        os.close(fd)
    remove_empty_dir(path, uid)


# Directories a walk holds open at once; a tree deeper than that is walked in parts.
MAX_DEPTH = 100
# A directory a walk enters: opened without following a symlink put in its place since it was
# looked at, and never blocking (on a FIFO swapped in).
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Step:
    """One entry of a walk (tree()): the directory it is in (parent, open), its name and
    mode (as lstat saw it). A directory comes twice: entered (fd: its own descriptor, open
    until it is left) and, after everything in it, left; one too deep to enter comes once,
    with fd None."""

    __slots__ = ("fd", "leaving", "mode", "name", "parent")

    def __init__(self, parent: int, name: str, mode: int, fd: int | None,
                 leaving: bool = False) -> None:
        self.parent, self.name, self.mode, self.fd, self.leaving = (
            parent, name, mode, fd, leaving)


def _open_dir(parent: int, name: str, unlock: bool) -> int:
    """The directory name below parent, open for reading, never through a symlink. unlock: one
    the walk may not read (a sandbox made it 0000) is made the owner's to read and write first
    (the launcher, as the user, is removing what is theirs)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        if not unlock:
            raise
    _unlock(parent, name)
    return os.open(name, DIR_FLAGS, dir_fd=parent)


def _unlock(parent: int, name: str) -> None:
    """Make the directory name below parent its owner's to read, write and enter: never
    through a symlink (an O_PATH, O_DIRECTORY, O_NOFOLLOW open of one fails)."""
    held = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=parent)
    try:
        _unlock_held(held)
    finally:
        os.close(held)


def _unlock_held(held: int) -> None:
    # O_PATH descriptors cannot fchmod: through /proc/self/fd, to the directory held.
    os.chmod(f"/proc/self/fd/{held}", 0o700)


def tree(top: int, max_depth: int = MAX_DEPTH, *,
         unlock: bool = False) -> Generator[Step, None, None]:
    """Every entry below the directory top (a descriptor open for reading), depth first,
    without recursion (a tree thousands deep is no deeper for Python) and without following a
    symlink: each directory is opened below its parent's descriptor with O_NOFOLLOW, so one
    swapped for a symlink after it was looked at is skipped, never entered. A directory deeper
    than max_depth is not entered. What vanishes meanwhile is skipped. unlock: see
    _open_dir."""
    frames: list[tuple[int, Iterator[os.DirEntry[str]], Step | None]] = []
    try:
        fd = os.dup(top)
        frames.append((fd, os.scandir(fd), None))
        while frames:
            fd, entries, entered = frames[-1]
            entry = next(entries, None)
            if entry is None:
                frames.pop()
                try:
                    if entered is not None:
                        yield Step(entered.parent, entered.name, entered.mode, fd, True)
                finally:
                    os.close(fd)
                continue
            try:
                mode = os.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_mode
            except OSError:
                continue
            if not stat.S_ISDIR(mode) or len(frames) > max_depth:
                yield Step(fd, entry.name, mode, None)
                continue
            try:
                child = _open_dir(fd, entry.name, unlock)
            except OSError:
                continue  # no longer a directory (something was swapped in), or unreadable
            try:
                step = Step(fd, entry.name, mode, child)
                frames.append((child, os.scandir(child), step))
            except BaseException:
                os.close(child)
                raise
            yield step
    finally:
        for fd, _, _ in frames:
            os.close(fd)


def _clear_in(directory: int, top: int, deep: list[str]) -> None:
    """Remove everything below directory. A folder too deep for one walk is moved up, to top,
    and named in deep, for a walk of its own: each entry is walked once, however deep."""
    for step in tree(directory, unlock=True):
        try:
            if step.leaving:
                os.rmdir(step.name, dir_fd=step.parent)
            elif step.fd is not None:
                # A folder the sandbox made read-only is its owner's to empty.
                os.fchmod(step.fd, 0o700)
            elif stat.S_ISDIR(step.mode):
                # Moved to another folder, a directory must be writable (its '..' changes).
                _unlock(step.parent, step.name)
                name = f".deep-{os.urandom(6).hex()}"
                os.rename(step.name, name, src_dir_fd=step.parent, dst_dir_fd=top)
                deep.append(name)
            else:
                os.unlink(step.name, dir_fd=step.parent)
        except OSError:
            pass  # what could not be removed stays, and so does the folder it is in


def clear_user_dir(path: str, uid: int) -> bool:
    """Remove a directory of the user's that a launch made, and everything in it (a sandbox
    wrote there), through descriptors opened without following the user's symlinks. False
    where some of it is still there; gone already, or not the user's any more: nothing of
    ours to remove, True."""
    try:
        names = components(path)
        if not names:
            return True  # never '/'
        parent = walk("/" + "/".join(names[:-1]), uid, -1, create=False)
    except (Refused, FileNotFoundError):
        return True
    except OSError:
        return False  # a folder on the way the user may not enter: it may still be there
    try:
        return clear_at(parent, names[-1], uid)
    finally:
        os.close(parent)


def clear_at(parent: int, name: str, uid: int) -> bool:
    """Remove the directory name in parent (open) and everything in it, if it is uid's; never
    through a symlink at name or below it. True once it is gone, or where it is not a
    directory of uid's (nothing of ours to remove)."""
    try:
        held = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return not exists_at(parent, name)  # a symlink put there: ELOOP
    try:
        if os.fstat(held).st_uid != uid:
            return True  # never a directory of another's
        # The sandbox may have locked the directory itself (it is its mount's root).
        _unlock_held(held)
        fd = os.open(".", DIR_FLAGS, dir_fd=held)
    except OSError:
        return False
    finally:
        os.close(held)
    try:
        deep: list[str] = []
        _clear_in(fd, fd, deep)
        while deep:
            below_name = deep.pop()
            try:
                below = _open_dir(fd, below_name, unlock=True)
            except OSError:
                continue  # walked already, as an entry of the top
            try:
                _clear_in(below, fd, deep)
            finally:
                os.close(below)
            try:  # noqa: SIM105
                os.rmdir(below_name, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def exists_at(parent: int, name: str) -> bool:
    """Whether name is in the directory parent (open), as itself, not what it points to;
    where it cannot be looked at, it may be: True."""
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        # A name too long for a file name (a long NAME's NAME.part) is none; else it may be
        # there, and cannot be looked at.
        return exc.errno != errno.ENAMETOOLONG
    return True
