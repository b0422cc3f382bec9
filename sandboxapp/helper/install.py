"""`sandboxapp setup`: make sandboxapp usable by desktop users, with root only where needed.

It installs a root-owned copy of sandboxapp and the libraries it needs (never the caller's
checkout, which its owner could change under root), a command for users, the privileged helper,
a sudoers drop-in that lets members of the `sandboxapp` group run that helper without a password,
and the group itself.

Why sudo and not pkexec: pkexec needs polkitd on a system bus, which minimal and container hosts
often lack; sudo works on every host, and its rule is checked with visudo before it is installed.
"""

from __future__ import annotations

import grp
import importlib
import json
import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.command import output_of, program_exists, run
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.util import put_in_place
from sandboxapp.paths import (
    HELPER_PATH,
    INSTALLED_LIB,
    SANDBOXAPP_GROUP,
    SHIPPED_PROFILE_DIR,
    SUDOERS_FILE,
    USER_COMMAND,
    Locations,
)

# The interpreter the installed commands run on: the system's, which root owns.
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Top-level modules sandboxapp needs at run time.
RUNTIME_MODULES = ("sandboxapp", "psutil", "xdg", "Xlib", "six", "pulsectl", "PIL", "pywayland",
                   "_cffi_backend")
# The shared libraries a wheel's compiled modules load from beside their package (auditwheel's
# NAME.libs, named in their RPATH), where the wheel has them.
RUNTIME_LIBRARIES = ("pillow.libs", "pywayland.libs")

WRAPPER = """#!{python} -IS
# Installed by `sandboxapp setup`; runs the root-owned copy in {lib} (-S: all it needs is
# there, and site and its .pth files would only slow every start).
import os
import sys

{environment}sys.path.insert(0, {lib_path!r})
from {module} import entry

entry()
"""

SUDOERS = """# Installed by `sandboxapp setup`: members of the {group} group may start sandboxes.
# Only the privileged helper, which trusts nothing it is given; a clean environment.
Defaults!{helper} env_reset, !use_pty
%{group} ALL=(root) NOPASSWD: {helper}
"""


@dataclass(frozen=True)
class SetupReport:
    lines: tuple[str, ...]


# What the first `setup` fixes in the helper, by the environment variable each is read from:
# every user's images and the root side's records. A later `setup --add-user`, from whatever
# shell, keeps them (moving the store would hide every image built so far).
SETTINGS_FILE = INSTALLED_LIB / "settings.json"
FIXED_SETTINGS = ("SANDBOXAPP_IMAGE_DIR", "SANDBOXAPP_RUN_DIR")


def _fixed_settings() -> dict[str, str] | None:
    """The settings setup fixed before; None where sandboxapp is not set up."""
    try:
        settings = json.loads(SETTINGS_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        settings = None
    if (not isinstance(settings, dict) or set(settings) != set(FIXED_SETTINGS)
            or not all(isinstance(v, str) and v.startswith("/") for v in settings.values())):
        raise SandboxError(f"{SETTINGS_FILE} is damaged",
                           hint="set sandboxapp up anew: sandboxapp setup --uninstall, then "
                                "sandboxapp setup", status=ExitStatus.FAILURE)
    return settings


def settings_for(locations: Locations, environ: dict[str, str]) -> dict[str, str]:
    """The helper's settings: the caller's (their environment, or the defaults) at the first
    setup; what that one fixed at every later one, where the caller's environment names a
    setting otherwise, an error naming both."""
    fixed = _fixed_settings()
    if fixed is None:
        return {"SANDBOXAPP_IMAGE_DIR": str(locations.image_dir),
                "SANDBOXAPP_RUN_DIR": str(locations.run_dir)}
    for name in FIXED_SETTINGS:
        given = environ.get(name, "")
        if given.startswith("/") and Path(given) != Path(fixed[name]):
            raise SandboxError(
                f"{name} is {given} here, but sandboxapp is set up with {fixed[name]}",
                hint=f"run setup without {name}, or with that value; to move it: sandboxapp "
                     "setup --uninstall, then sandboxapp setup", status=ExitStatus.USAGE)
    return fixed


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("setup needs root", hint="run: sudo sandboxapp setup",
                           status=ExitStatus.USAGE)


def _check_python() -> None:
    if not SYSTEM_PYTHON.exists():
        raise SandboxError(f"{SYSTEM_PYTHON} is missing", hint="apt-get install python3")
    version = output_of([str(SYSTEM_PYTHON), "-c",
                         "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    major, minor = (int(x) for x in version.split("."))
    if (major, minor) < (3, 11):
        raise SandboxError(f"{SYSTEM_PYTHON} is Python {version}; sandboxapp needs 3.11 or newer")


def _module_dir(name: str) -> Path | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    file = Path(module.__file__ or "")
    return file.parent if file.name == "__init__.py" else file


def _write_atomically(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    put_in_place(path, lambda temporary: temporary.write_text(text, encoding="utf-8"),
                 mode=mode)


def _install_lib() -> None:
    staging = Path(tempfile.mkdtemp(prefix=".lib-", dir=_ensure_dir(INSTALLED_LIB)))
    staging.chmod(0o755)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in RUNTIME_MODULES:
        source = _module_dir(name)
        if source is None:
            raise SandboxError(f"cannot install: the module {name} is not importable here",
                               hint="run setup with the interpreter sandboxapp is installed in")
        if source.is_dir():
            shutil.copytree(source, staging / source.name, ignore=ignore)
        else:
            shutil.copy2(source, staging / source.name)
        for libraries in (source.parent / name for name in RUNTIME_LIBRARIES):
            if libraries.is_dir() and not (staging / libraries.name).exists():
                shutil.copytree(libraries, staging / libraries.name)
    for data in (SHIPPED_PROFILE_DIR, SHIPPED_PROFILE_DIR.parent / "desktop-entries"):
        if data.is_dir():
            shutil.copytree(data, staging / data.name, ignore=ignore)
    # Compiled here, by the interpreter the commands run on: users cannot write below this
    # root-owned directory, so without it every launch would compile every module again.
    run([str(SYSTEM_PYTHON), "-I", "-m", "compileall", "-q", str(staging)],
        what="compiling the installed modules")
    for root, _dirs, files in os.walk(staging):
        os.chown(root, 0, 0)
        os.chmod(root, 0o755)
        for file in files:
            os.chown(os.path.join(root, file), 0, 0)
            os.chmod(os.path.join(root, file), 0o644)
    target = INSTALLED_LIB / "lib"
    if target.exists():
        old = INSTALLED_LIB / f".old-{os.getpid()}"
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old)
    else:
        os.rename(staging, target)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


def _wrapper(module: str, *, fixed: dict[str, str], defaults: dict[str, str]) -> str:
    lines = "".join(f"os.environ[{k!r}] = {v!r}\n" for k, v in fixed.items())
    lines += "".join(f"os.environ.setdefault({k!r}, {v!r})\n" for k, v in defaults.items())
    return WRAPPER.format(python=SYSTEM_PYTHON, lib=INSTALLED_LIB,
                          lib_path=str(INSTALLED_LIB / "lib"), module=module, environment=lines)


def _install_sudoers() -> None:
    if not program_exists("visudo"):
        raise SandboxError("sudo is not installed", hint="apt-get install sudo")
    text = SUDOERS.format(group=SANDBOXAPP_GROUP, helper=HELPER_PATH)

    def checked(temporary: Path) -> None:
        temporary.write_text(text, encoding="utf-8")
        run(["visudo", "-c", "-q", "-f", str(temporary)], what="checking the sudoers rule")

    # sudo ignores files with a dot in their name: the temporary one is never live.
    put_in_place(SUDOERS_FILE, checked, mode=0o440)

def _ensure_group() -> None:
    try:
        grp.getgrnam(SANDBOXAPP_GROUP)
    except KeyError:
        run(["groupadd", "--system", SANDBOXAPP_GROUP], what="creating the group")


def setup(locations: Locations, add_users: list[str], environ: dict[str, str]) -> SetupReport:
    _require_root()
    _check_python()
    for name in add_users:
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise SandboxError(f"there is no user named {name!r}",
                               status=ExitStatus.USAGE) from None
    settings = settings_for(locations, environ)
    _ensure_group()
    _install_lib()
    _write_atomically(SETTINGS_FILE, json.dumps(settings, indent=1) + "\n", 0o644)
    # The helper's store and run directories are fixed, by root; the user command defaults
    # to the same store, so that both sides agree on the image's UIDs.
    _write_atomically(Path(HELPER_PATH), _wrapper(
        "sandboxapp.helper.privileged", fixed=settings, defaults={}), 0o755)
    store = {"SANDBOXAPP_IMAGE_DIR": settings["SANDBOXAPP_IMAGE_DIR"]}
    _write_atomically(USER_COMMAND, _wrapper("sandboxapp.cli", fixed={}, defaults=store), 0o755)
    _install_sudoers()
    lines = [f"installed {USER_COMMAND}, {HELPER_PATH} and {INSTALLED_LIB}",
             f"installed {SUDOERS_FILE}: members of {SANDBOXAPP_GROUP} may launch sandboxes"]
    for name in add_users:
        run(["usermod", "--append", "--groups", SANDBOXAPP_GROUP, name],
            what=f"adding {name} to {SANDBOXAPP_GROUP}")
        lines.append(f"added {name} to {SANDBOXAPP_GROUP} (effective at their next login; "
                     "sudo sees it at once)")
    return SetupReport(tuple(lines))


def uninstall() -> SetupReport:
    _require_root()
    removed = []
    for path in (SUDOERS_FILE, Path(HELPER_PATH), USER_COMMAND):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    if (INSTALLED_LIB / "lib").exists():
        shutil.rmtree(INSTALLED_LIB)
        removed.append(str(INSTALLED_LIB))
    try:
        grp.getgrnam(SANDBOXAPP_GROUP)
        run(["groupdel", SANDBOXAPP_GROUP], what="removing the group")
        removed.append(f"group {SANDBOXAPP_GROUP}")
    except KeyError:
        pass
    return SetupReport(tuple(f"removed {item}" for item in removed) or ("nothing to remove",))

