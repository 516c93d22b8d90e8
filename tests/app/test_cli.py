"""The `eoexplorer` command line: help on every sub-command, settings validation, clear errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from app.cli import build_parser, main

SUBCOMMANDS = ["collections", "search", "ingest", "demo", "place", "tiles", "serve", "run"]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_and_catalog_option(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--catalog PATH_OR_STAC_URL" in out


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_console_script_is_installed():
    exe = shutil.which("eoexplorer") or str(
        __import__("pathlib").Path(sys.executable).parent / "eoexplorer"
    )
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0
    assert "usage: eoexplorer" in result.stdout


def test_invalid_setting_is_a_clear_error(capsys):
    code = main(["tiles", "--port", "70000", "--catalog", "x.sqlite"])
    assert code == 2
    err = capsys.readouterr().err
    assert "tiles_port" in err and "less than or equal to 65535" in err


def test_settings_come_from_environment(monkeypatch, tmp_path):
    from app.cli import _settings

    monkeypatch.setenv("EOX_CATALOG", str(tmp_path / "env.sqlite"))
    args = build_parser().parse_args(["collections"])
    assert _settings(args).catalog == str(tmp_path / "env.sqlite")
    args = build_parser().parse_args(["collections", "--catalog", str(tmp_path / "cli.sqlite")])
    assert _settings(args).catalog == str(tmp_path / "cli.sqlite")


def test_unknown_collection_names_valid_choices(tmp_path, capsys):
    catalog = tmp_path / "cat.sqlite"
    assert main(["collections", "--catalog", str(catalog)]) == 0
    code = main(["search", "no-such-collection", "--catalog", str(catalog)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-collection" in err


def _write_tif(path, value):
    data = np.full((1, 16, 16), value, dtype="uint16")
    with rasterio.open(
        path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint16",
        crs="EPSG:32633", transform=from_origin(500000, 5800000, 10, 10), nodata=0,
    ) as dst:
        dst.write(data)


def test_ingest_then_search_from_the_command_line(tmp_path, capsys):
    catalog = tmp_path / "cat.sqlite"
    good = tmp_path / "scene_20200101_B04.tif"
    _write_tif(good, 1234)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a raster at all")
    code = main([
        "ingest", str(good), str(bad), "--collection", "mine",
        "--catalog", str(catalog), "--data-dir", str(tmp_path / "data"),
    ])
    captured = capsys.readouterr()
    assert code == 1  # one file failed: reported, not skipped silently
    assert "added 1" in captured.out and "failed 1" in captured.out
    assert "broken.tif" in captured.err
    assert main(["collections", "--catalog", str(catalog)]) == 0
    assert "mine" in capsys.readouterr().out
    # the scene covers 15.000-15.002 E, 52.3489-52.3503 N (UTM 33N, x=500000..500160)
    assert main(["search", "mine", "--catalog", str(catalog), "--point", "15.001,52.3495"]) == 0
    out = capsys.readouterr().out
    assert "no items match" not in out
    assert main(["search", "mine", "--catalog", str(catalog), "--point", "16.0,52.3495"]) == 0
    assert "no items match" in capsys.readouterr().out


def test_readme_place_example_finds_the_demo_scene(capsys):
    """`eoexplorer search sentinel-2-l1c --place Berlin` (README) lists the demo scene."""
    from pathlib import Path

    catalog = Path(__file__).resolve().parents[2] / ".cache" / "demo" / "catalog.sqlite"
    if not catalog.exists():
        pytest.skip(f"no demo catalog at {catalog}: run `eoexplorer demo` first")
    assert main(["search", "sentinel-2-l1c", "--place", "Berlin", "--catalog", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert "T33UUU_20170216T102101" in out and "no items match" not in out
    assert main(["search", "sentinel-2-l1c", "--place", "Germany (country)",
                 "--catalog", str(catalog)]) == 0
    assert "T33UUU_20170216T102101" in capsys.readouterr().out
