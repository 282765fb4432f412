"""fredset export: ImageFolder PNGs, .npz and .safetensors that load where fredset is not installed."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fredset.export as export_module
from fredset import FredDataset, FredsetError, save
from fredset.export import export, export_kind, folder_names

from conftest import make_artifact, one_line_error, run_cli as run

CLASSES = ["T-shirt/top", "a b", "\u00fcber"]


def without_fredset(tmp_path, script: str) -> dict:
    """Run ``script`` in a fresh interpreter that never imports fredset; it fills ``out`` (a dict of arrays),
    which comes back through an .npz."""
    results = tmp_path / "loaded.npz"
    code = ("import sys, json, os\nimport numpy as np\nout = {}\n" + script +
            "\nassert not any(m == 'fredset' or m.startswith('fredset.') for m in sys.modules), 'fredset imported'"
            f"\nnp.savez({str(results)!r}, **out)\n")
    completed = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    with np.load(results, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


@pytest.fixture
def rgb_file(tmp_path):
    path = tmp_path / "rgb.fredset"
    artifact = make_artifact(counts=(3, 2, 4), channels=3, size=(8, 10), k=7, classes=CLASSES,
                             mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    artifact.provenance["recommended_lr"] = 0.0125
    save(artifact, path)
    return path


def test_export_kind_follows_the_destination(tmp_path):
    assert export_kind(tmp_path / "x.npz") == "npz"
    assert export_kind(tmp_path / "X.SafeTensors") == "safetensors"
    assert export_kind(tmp_path / "images") == "imagefolder"
    assert export_kind(f"{tmp_path}/images.v1/") == "imagefolder"
    with pytest.raises(FredsetError, match="cannot export to a .pt file"):
        export_kind(tmp_path / "x.pt")


def test_folder_names_are_safe_unique_and_sort_in_label_order():
    names = folder_names(CLASSES + ["..", "/"] + [f"c{i}" for i in range(7)])
    assert names[:5] == ["00-T-shirt_top", "01-a b", "02-_ber", "03", "04-_"]
    assert sorted(names) == names and len(set(names)) == len(names)
    assert all("/" not in name and not name.startswith(".") for name in names)


@pytest.mark.parametrize("channels, mode", [(3, "RGB"), (1, "L")])
def test_imagefolder_loads_with_pil_without_fredset(tmp_path, channels, mode):
    source = tmp_path / "data.fredset"
    save(make_artifact(counts=(3, 2, 4), channels=channels, size=(8, 10), k=20, classes=CLASSES,
                       std=(0.5,) * channels), source)  # some pixels leave [0, 1]
    target = tmp_path / "images"
    result = export(source, target)
    loaded = without_fredset(tmp_path, f"""
from PIL import Image
root = {str(target)!r}
folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
pixels, labels, modes = [], [], set()
for label, folder in enumerate(folders):
    for name in sorted(os.listdir(os.path.join(root, folder))):
        with Image.open(os.path.join(root, folder, name)) as image:
            modes.add(image.mode)
            array = np.asarray(image)
        pixels.append(array if array.ndim == 3 else array[:, :, None])
        labels.append(label)
out["pixels"] = np.stack(pixels)
out["labels"] = np.array(labels)
out["folders"] = np.array(folders)
out["modes"] = np.array(sorted(modes))
out["facts"] = np.array(open(os.path.join(root, "fredset-export.json")).read())
""")
    dataset = FredDataset(source, pixel_space=True)
    expected = dataset.images.permute(0, 2, 3, 1).numpy()
    assert loaded["pixels"].shape == expected.shape and loaded["pixels"].dtype == np.uint8
    assert np.abs(loaded["pixels"] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6  # clipped, then rounded
    assert np.array_equal(loaded["labels"], dataset.targets.numpy())
    assert list(loaded["folders"]) == ["0-T-shirt_top", "1-a b", "2-_ber"]
    assert list(loaded["modes"]) == [mode]
    normalised = FredDataset(source).images.numpy()
    mean = np.array(dataset.artifact.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.array(dataset.artifact.std, np.float32).reshape(1, -1, 1, 1)
    raw = normalised * std + mean
    clipped = np.mean((raw < 0) | (raw > 1))
    assert 0 < clipped < 1 and result.clipped_fraction == pytest.approx(clipped)
    facts = json.loads(str(loaded["facts"]))
    assert facts["classes"] == CLASSES and facts["space"] == "pixel"
    assert facts["png"]["clipped_fraction"] == pytest.approx(clipped)
    assert facts["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_npz_and_safetensors_load_without_fredset(tmp_path, rgb_file):
    export(rgb_file, tmp_path / "data.npz")
    export(rgb_file, tmp_path / "data.safetensors")
    loaded = without_fredset(tmp_path, """
with np.load("data.npz", allow_pickle=False) as archive:
    for key in archive.files:
        out["npz_" + key] = archive[key]
from safetensors import safe_open
from safetensors.numpy import load_file
for key, value in load_file("data.safetensors").items():
    out["st_" + key] = value
with safe_open("data.safetensors", framework="np") as handle:
    out["st_metadata"] = np.array(json.dumps(handle.metadata()))
""")
    dataset = FredDataset(rgb_file)
    images, labels = dataset.images.numpy(), dataset.targets.numpy()
    digest = hashlib.sha256(rgb_file.read_bytes()).hexdigest()
    for prefix in ("npz_", "st_"):
        assert loaded[prefix + "images"].dtype == np.float32 and loaded[prefix + "labels"].dtype == np.int64
        assert np.array_equal(loaded[prefix + "images"], images)  # the exact float32 values, normalised space
        assert np.array_equal(loaded[prefix + "labels"], labels)
    assert list(loaded["npz_classes"]) == CLASSES
    assert np.array_equal(loaded["npz_mean"], dataset.artifact.mean)
    assert np.array_equal(loaded["npz_std"], dataset.artifact.std)
    assert float(loaded["npz_recommended_lr"]) == 0.0125
    facts = json.loads(str(loaded["npz_metadata"]))
    assert facts["space"] == "normalised" and facts["source"]["sha256"] == digest
    metadata = json.loads(str(loaded["st_metadata"]))
    assert metadata["space"] == "normalised" and metadata["dataset"] == "synthetic"
    assert json.loads(metadata["classes"]) == CLASSES and json.loads(metadata["recommended_lr"]) == 0.0125
    assert json.loads(metadata["mean"]) == list(dataset.artifact.mean)
    assert json.loads(metadata["source"])["sha256"] == digest
    pixels = loaded["st_images"] * np.array(json.loads(metadata["std"]), np.float32).reshape(1, -1, 1, 1) \
        + np.array(json.loads(metadata["mean"]), np.float32).reshape(1, -1, 1, 1)
    assert np.allclose(np.clip(pixels, 0, 1), FredDataset(rgb_file, pixel_space=True).images.numpy(), atol=1e-6)


def test_cli_says_what_each_export_keeps(tmp_path, rgb_file):
    result = run("export", rgb_file, "--to", tmp_path / "images")
    assert result.exit_code == 0, result.output
    assert "9 PNGs" in result.stdout and "clipped to [0, 1] and rounded" in result.stdout
    assert "% of values were outside [0, 1]" in result.stdout
    digest = hashlib.sha256(rgb_file.read_bytes()).hexdigest()
    result = run("export", rgb_file, "--to", tmp_path / "data.npz", "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert "normalised space" in result.stdout and "recommended lr 0.0125" in result.stdout
    assert str(rgb_file) in one_line_error(run("export", rgb_file, "--to", tmp_path / "other.npz", "--sha256", "0" * 64))
    assert not (tmp_path / "other.npz").exists()


def test_an_existing_directory_is_never_merged_into(tmp_path, rgb_file):
    target = tmp_path / "images"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    message = one_line_error(run("export", rgb_file, "--to", target))
    assert str(target) in message and "not empty" in message
    assert os.listdir(target) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("export", rgb_file, "--to", empty).exit_code == 0  # an empty directory is filled
    assert len(os.listdir(empty)) == 4  # three class folders and fredset-export.json


def test_a_failed_imagefolder_export_leaves_nothing(tmp_path, rgb_file, monkeypatch):
    calls = []

    def failing(pixels):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return b"png"

    monkeypatch.setattr(export_module, "encode_png", failing)
    with pytest.raises(FredsetError, match="No space left on device"):
        export(rgb_file, tmp_path / "images")
    assert sorted(os.listdir(tmp_path)) == ["rgb.fredset"]  # no target, no temporary directory


def test_safetensors_missing_says_how_to_install(tmp_path, rgb_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    message = one_line_error(run("export", rgb_file, "--to", tmp_path / "data.safetensors"))
    assert "pip install safetensors" in message
    assert not (tmp_path / "data.safetensors").exists()


def test_bad_targets_and_sources_give_one_line(tmp_path, rgb_file):
    assert "X.npz or X.safetensors" in one_line_error(run("export", rgb_file, "--to", tmp_path / "data.pt"))
    assert "does not exist" in one_line_error(run("export", rgb_file, "--to", tmp_path / "no" / "data.npz"))
    bad = tmp_path / "bad.fredset"
    bad.write_bytes(b"not a fredset file")
    assert str(bad) in one_line_error(run("export", bad, "--to", tmp_path / "data.npz"))
    two = tmp_path / "two.fredset"
    save(make_artifact(channels=2), two)
    message = one_line_error(run("export", two, "--to", tmp_path / "images"))
    assert "2 channels" in message and "npz" in message
    assert not (tmp_path / "images").exists()
