import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fredset import save
from fredset.format import to_bytes
from fredset_cli.main import cli

from conftest import make_artifact

VECTORS = sorted((Path(__file__).parents[1] / "spec" / "vectors").glob("*.fredset"))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "x.fredset"
    save(make_artifact(counts=(3, 2), channels=3, size=(8, 8), k=6, license="CC0-1.0"), path)
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_inspect_prints_a_summary(saved):
    result = run("inspect", saved)
    assert result.exit_code == 0, result.output
    for expected in ("format 1.0", "checksum ok", "2 classes", "3x8x8", "5, 2-3 per class", "k = 6 of 64",
                     "float32", "file size", "decoded size", "licence", "CC0-1.0"):
        assert expected in result.output


def test_inspect_json_has_the_facts(saved):
    result = run("inspect", saved, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["format_version"] == "1.0" and report["checksum"]["status"] == "ok"
    assert report["instances_per_class"] == [3, 2] and report["k"] == 6
    assert report["image"] == {"channels": 3, "height": 8, "width": 8}
    assert report["file_bytes"] == saved.stat().st_size
    assert report["decoded_float32_bytes"] == 5 * 3 * 8 * 8 * 4
    assert report["coefficients"]["dtype"] == "float32"
    assert report["provenance"]["objective"] == "dm"


def test_inspect_reports_pixel_values_before_the_clamp(tmp_path):
    artifact = make_artifact(counts=(3, 2), channels=3, size=(8, 8), k=6, std=(4.0,) * 3)
    save(artifact, tmp_path / "wide.fredset")
    report = json.loads(run("inspect", tmp_path / "wide.fredset", "--json").stdout)["pixel_range"]
    pixels = artifact.decode() * 4.0 + 0.5  # the artifact's std and mean, no clamp
    assert report["min"] == pytest.approx(float(pixels.min())) and report["min"] < 0
    assert report["max"] == pytest.approx(float(pixels.max())) and report["max"] > 1
    assert report["outside"] == pytest.approx(float(((pixels < 0) | (pixels > 1)).float().mean()))
    assert 0 < report["outside"] < 1
    assert f"{100 * report['outside']:.1f}% outside [0, 1]" in run("inspect", tmp_path / "wide.fredset").output


def test_inspect_writes_pictures(saved, tmp_path):
    grid, masks = tmp_path / "grid.png", tmp_path / "masks.png"
    result = run("inspect", saved, "--grid", grid, "--masks", masks, "--scale", 1)
    assert result.exit_code == 0, result.output
    assert png_size(grid) == (1 + 3 * 9, 1 + 2 * 9)  # 3 columns x 2 class rows of 8px cells + 1px gaps
    assert png_size(masks) == (2 + 2 * (16 + 2), 2 + 16 + 2)


@pytest.mark.parametrize("content", [None, b"", b"not a fredset file", "corrupt"])
def test_bad_files_give_one_line_and_status_2(tmp_path, content):
    path = tmp_path / "bad.fredset"
    if content == "corrupt":
        data = bytearray(to_bytes(make_artifact()))
        data[-5] ^= 1
        path.write_bytes(bytes(data))
    elif content is not None:
        path.write_bytes(content)
    result = run("inspect", path, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_unwritable_picture_path_is_an_error(saved, tmp_path):
    result = run("inspect", saved, "--grid", tmp_path / "no" / "such" / "dir.png")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_usage_errors_exit_2(saved):
    assert run("inspect").exit_code == 2
    assert run("inspect", saved, "--per-class", 0).exit_code == 2


def test_every_spec_vector_inspects_as_json():
    assert VECTORS, "spec/vectors holds no .fredset files"
    for path in VECTORS:
        result = run("inspect", "--json", path)
        if path.name.startswith("bad-"):
            assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        else:
            assert result.exit_code == 0, (path, result.stderr)
            assert json.loads(result.stdout)["num_instances"] > 0


def test_console_script_is_installed(saved):
    done = subprocess.run([sys.executable, "-m", "fredset_cli.main", "inspect", str(saved), "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and json.loads(done.stdout)["num_classes"] == 2
    done = subprocess.run(["fredset", "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "fredset" in done.stdout
