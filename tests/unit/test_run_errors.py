"""Launch errors a user meets before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxapp.cli import main


def test_an_image_that_is_not_built_is_named_with_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOXAPP_IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("SANDBOXAPP_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["run", "xeyes"]) == 125
    err = capsys.readouterr().err
    assert "the image for 'xeyes' is not built" in err
    assert "hint: build it with: sandboxapp image build xeyes" in err
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "images").exists()
