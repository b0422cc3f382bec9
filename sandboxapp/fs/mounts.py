"""The mount system calls sandboxapp makes, through libc; failures raise OSError."""

from __future__ import annotations

import ctypes
import os
import stat

from sandboxapp.fs import nofollow

MS_BIND = 4096
MNT_DETACH = 2
_LIBC: list[ctypes.CDLL] = []


def libc() -> ctypes.CDLL:
    if not _LIBC:
        # By its soname: ctypes.util.find_library runs ldconfig, which a launch cannot afford.
        _LIBC.append(ctypes.CDLL("libc.so.6", use_errno=True))
    return _LIBC[0]


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def mount_overlay(lower: str, upper: str, work: str, target: str, *, volatile: bool) -> None:
    for path in (lower, upper, work):
        if any(c in path for c in ",:\\"):
            raise OSError(0, f"{path} has ',', ':' or '\\', which an overlay mount cannot take")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if volatile:
        # The layer is thrown away at exit: no need to sync it to disk.
        options += ",volatile"
    _check(libc().mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()))


def mount_layer(layer: str, rootfs: str, *, volatile: bool, state: str | None = None) -> str:
    """Mount the overlay of an upper directory (made if missing) over rootfs on layer/merged;
    the merged tree's path. The upper and work directories are layer's own, or those of
    `state` (a stateful profile's, kept between runs apart from the throw-away layer)."""
    base = state or layer
    upper, work, merged = f"{base}/upper", f"{base}/work", f"{layer}/merged"
    if not os.path.exists(upper):
        root = os.stat(rootfs)
        os.mkdir(upper)
        # The merged root takes the upper directory's owner and mode: the image's.
        os.chown(upper, root.st_uid, root.st_gid)
        os.chmod(upper, root.st_mode & 0o7777)
    for directory in (work, merged):
        if not os.path.isdir(directory):
            os.mkdir(directory)
    mount_overlay(rootfs, upper, work, merged, volatile=volatile)
    return merged


FILE_TYPE_NAMES = {stat.S_IFDIR: "directory", stat.S_IFSOCK: "socket", stat.S_IFREG: "file"}


def stage_owned(path: str, uid: int, gid: int, target: str, *, trusted: bool,
                file_type: int | None) -> None:
    """Open path as the user's own (nofollow.open_owned, which raises Refused), check that it
    is a file_type (any, for None), and bind that very inode on target."""
    fd = nofollow.open_owned(path, uid, gid, trusted=trusted)
    try:
        mode = os.fstat(fd).st_mode
        if file_type is not None and stat.S_IFMT(mode) != file_type:
            raise nofollow.Refused(path, f"it is not a {FILE_TYPE_NAMES[file_type]}")
        bind_descriptor(fd, target, directory=stat.S_ISDIR(mode))
    finally:
        os.close(fd)


def bind_descriptor(fd: int, target: str, *, directory: bool) -> None:
    """Bind-mount the file or directory open as fd (O_PATH) on target, which is created. The
    mount goes through /proc/self/fd, so it is the very inode that was checked, whatever has
    happened to its path since."""
    if directory:
        os.mkdir(target, 0o700)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    _check(libc().mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(target), None, MS_BIND,
                        None))


def unmount(target: str) -> None:
    _check(libc().umount2(os.fsencode(target), MNT_DETACH))


# The mount API of Linux 5.12 and later, for a bind of one open file that is idmapped and
# read-only (mount(2) can do neither to a bind it has not made yet).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # the same on every arch
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MOUNT_ATTR_IDMAP = 0x100000
MS_REC, MS_PRIVATE, MS_SHARED = 0x4000, 1 << 18, 1 << 20


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check_fd(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def mount_readonly_idmapped(fd: int, userns_fd: int, target: str) -> None:
    """Bind the file open as fd on target (an existing file), read-only, without exec, suid
    or devices, its owners seen through the user namespace userns_fd's mapping. Where target
    is below a shared mount, every copy the mount propagates to (a container's, in a user
    namespace of its own) is locked read-only: the container's root cannot remount it."""
    tree = _check_fd(libc().syscall(SYS_OPEN_TREE, fd, b"",
                                    OPEN_TREE_CLONE | os.O_CLOEXEC | AT_EMPTY_PATH))
    try:
        attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                          | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(libc().syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                              ctypes.sizeof(attr)))
        _check(libc().syscall(SYS_MOVE_MOUNT, tree, b"", -100, os.fsencode(target),
                              MOVE_MOUNT_F_EMPTY_PATH))
    finally:
        os.close(tree)


def make_shared_mount_point(path: str) -> None:
    """A mount point of the directory path on itself, shared: what is mounted below it later
    reaches the copies of it that other mount namespaces hold as its slaves."""
    _check(libc().mount(os.fsencode(path), os.fsencode(path), None, MS_BIND, None))
    _check(libc().mount(None, os.fsencode(path), None, MS_SHARED, None))


def make_private(path: str) -> None:
    """The mount at path (and those below it) propagates nothing, and receives nothing."""
    _check(libc().mount(None, os.fsencode(path), None, MS_REC | MS_PRIVATE, None))
