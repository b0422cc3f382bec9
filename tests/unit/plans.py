"""Launch plans for unit tests: a profile and an image's metadata in a temporary store, no
image tree, no root."""

from __future__ import annotations

from pathlib import Path

from sandboxapp.image.store import Image, ImageMeta, ImageStore
from sandboxapp.paths import Locations
from sandboxapp.plan import LaunchPlan, plan_display, plan_launch
from sandboxapp.profile.model import Profile
from sandboxapp.profile.parse import parse_profile

BASE = 0x70040000


def profile_with(sandbox: dict[str, object], path: Path = Path("/p/app.toml")) -> Profile:
    doc = {"command": ["/usr/bin/app", "--flag"], "image": {"suite": "bookworm"},
           "sandbox": sandbox}
    return parse_profile("app", path, "file", doc)


def make_plan(tmp_path: Path, sandbox: dict[str, object], *, extra: tuple[str, ...] = (),
              program: str | None = None, instance: str | None = None,
              environ: dict[str, str] | None = None) -> LaunchPlan:
    profile = profile_with(sandbox, tmp_path / "app.toml")
    store = tmp_path / "images"
    meta = ImageMeta(profile="app", uid_base=BASE, uid_count=65536, suite="bookworm",
                     packages=(), mirror="http://m/debian", security=None, spec_digest="x",
                     built_at="2026-01-01T00:00:00+00:00", size_bytes=1)
    (store / "app").mkdir(parents=True)
    (store / "app" / "image.json").write_text(meta.to_json())
    locations = Locations(image_dir=store, run_dir=tmp_path / "run",
                          config_home=tmp_path / "config", data_home=tmp_path / "data")
    shown = plan_display(profile, {"DISPLAY": ":7"} if environ is None else environ,
                         check=False)
    plan = plan_launch(profile, list(extra), locations, shown, instance=instance,
                       program=program)
    assert plan.image == Image(ImageStore(store).image_path("app"), meta)
    return plan


def grants(plan: LaunchPlan, *, x11_dir: Path | None = None,
           sound_dir: Path | None = None) -> dict[str, object]:
    """The helper's request's grants for a plan, as a launcher that made these directories
    writes them."""
    found: dict[str, object] = {}
    if plan.display is not None:
        found["display"] = {"display": plan.display.number,
                            "x11_dir": str(x11_dir or "/run/user/1000/sandboxapp/.x11/app")}
    if sound_dir is not None:
        found["sound"] = {"dir": str(sound_dir)}
    return found
