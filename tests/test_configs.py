"""configs/: the shipped config files parse and match the code's defaults; bad configs are refused."""

import dataclasses
from pathlib import Path

import tomllib
from typer.testing import CliRunner

from affectsynth.affect.synthetic_gallery import GalleryConfig
from affectsynth.cli.app import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_model_config_matches_the_built_in_gallery():
    table = tomllib.loads((CONFIGS / "default_model.toml").read_text())["gallery"]
    assert table == dataclasses.asdict(GalleryConfig())


def test_model_build_refuses_unknown_config_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gallery]\nnum_subject = 3\n")
    res = CliRunner().invoke(app, ["model", "build", "--default", "--config", str(bad)])
    assert res.exit_code == 2
    assert "unknown [gallery] keys num_subject" in res.output


def test_model_build_config_needs_default(tmp_path):
    res = CliRunner().invoke(
        app, ["model", "build", str(tmp_path), "--config", str(CONFIGS / "default_model.toml")]
    )
    assert res.exit_code == 2 and "--default" in res.output


def test_model_build_default_from_config_refreshes_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTSYNTH_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "small.toml"
    small.write_text("[gallery]\nnum_subjects = 2\nnum_directions = 8\nframes_per_sequence = 4\n")
    res = CliRunner().invoke(
        app, ["model", "build", "--default", "--config", str(small), "-o", str(tmp_path / "m.npz")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.npz").is_file()
    assert len(list((tmp_path / "cache").glob("default_model_*.npz"))) == 1
