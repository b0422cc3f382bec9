"""Copies, made for the desktop user, of what a sandbox wrote: fresh files and folders of the
user's, written through descriptors. Nothing the sandbox still holds of its own (a
descriptor open for writing, a hard link, a folder it can create entries in) reaches the
copy, and only regular files and folders are copied: never a symlink, a FIFO or a socket.

The sandbox shapes what is copied, so a copy costs no more than the sandbox spent: a sparse
file costs only the data it holds (holes stay holes, and a file system that shares blocks
shares them), a file with other links (written once, linked a thousand times) is not copied,
a file that grows meanwhile is copied as long as it was when the copy began, and a folder as
deep or as full as a sandbox can make it is copied to MAX_DEPTH and MAX_ENTRIES, no further.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from sandboxapp.fs import nofollow
from sandboxapp.fs.safepath import DesktopUser, create_user_file, make_user_dir

# ioctl(FICLONE): the target shares the source's blocks (btrfs, XFS), a copy at no cost.
FICLONE = 0x40049409
# The entries of a folder copied, at most, and how deep.
MAX_ENTRIES = 10_000
MAX_DEPTH = 32
CHUNK = 1 << 20


def copy_data(source: int, target: int) -> None:
    """The bytes of the regular file source, as long as it is now, into the new, empty file
    target."""
    size = os.fstat(source).st_size
    try:
        fcntl.ioctl(target, FICLONE, source)
    except OSError:
        _copy_extents(source, target, size)
    os.ftruncate(target, size)


def _copy_extents(source: int, target: int, size: int) -> None:
    """The data of source up to size, hole by hole skipped."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # nothing but a hole is left
            raise
        end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        while start < end:
            try:
                done = os.copy_file_range(source, target, end - start, start, start)
            except OSError:  # between file systems, where the kernel does not copy itself
                data = os.pread(source, min(end - start, CHUNK), start)
                done = os.pwrite(target, data, start) if data else 0
            if done == 0:
                return  # the file shrank meanwhile
            start += done
        offset = end


def copy_file(source_dir: int, name: str, target_dir: int, new: str,
              user: DesktopUser) -> None:
    """The regular file name in source_dir, copied as the new file new in target_dir (a
    directory of the user's, open): never through a symlink at either name; the copy is the
    user's, and not executable. OSError where name is not a regular file of one link, or new
    exists."""
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=source_dir)
    try:
        st = os.fstat(source)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", name)
        if st.st_nlink != 1:
            # Each copy must cost the sandbox what it costs the launcher: a file it wrote once
            # and linked a thousand times is not copied a thousand times.
            raise OSError(errno.EMLINK, "it has other links in the sandbox", name)
        target = create_user_file(target_dir, new, user, 0o666)
        try:
            copy_data(source, target)
        finally:
            os.close(target)
    finally:
        os.close(source)


def copy_tree(source_dir: int, name: str, target_dir: int, new: str,
              user: DesktopUser) -> bool:
    """The folder name in source_dir, copied as the new folder new in target_dir: its folders
    and regular files, nothing else. False where a part was left out (too deep, too many
    entries, a file that could not be read); what was copied stays."""
    top = os.open(name, nofollow.DIR_FLAGS, dir_fd=source_dir)
    made: list[int] = []  # the copies of the folders walked into
    walk = nofollow.tree(top, MAX_DEPTH)
    whole = True
    try:
        made.append(make_user_dir(target_dir, new, user))
        for count, step in enumerate(walk):
            if step.leaving:
                os.close(made.pop())
            elif count >= MAX_ENTRIES:
                return False
            elif step.fd is not None:
                made.append(make_user_dir(made[-1], step.name, user))
            elif stat.S_ISDIR(step.mode):
                whole = False  # too deep
            elif stat.S_ISREG(step.mode):
                try:
                    copy_file(step.parent, step.name, made[-1], step.name, user)
                except OSError:
                    whole = False  # unreadable, or linked elsewhere too
        return whole
    finally:
        walk.close()
        for fd in made:
            os.close(fd)
        os.close(top)
