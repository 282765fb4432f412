"""Baselines at equal bytes (fredset.baselines, fredset evaluate --baseline) on small synthetic data: every class
within the budget, the policy's m and quality maximal, raw exact, draws seeded and from the right class."""

import io
import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fredset import FredsetError, save
from fredset.baselines import NEIGHBOURS, _largest, build_baseline, class_generator, encode_mosaic
from fredset.data import RealData, load_dataset
from fredset.data.statistics import normalise
from fredset.evaluate import DEFAULT_LR, evaluate
from fredset_cli.main import cli

from conftest import make_artifact

CLASSES = 3
BRIGHTNESS = (50, 128, 206)  # class c's images average within 30 levels of BRIGHTNESS[c]
# bytes per class that buy some 20 to 40 of these 8x8 images at quality 10 (of 100 per class)
BUDGETS = {("jpeg", 1): 250, ("webp", 1): 150, ("jpeg", 3): 330, ("webp", 3): 200, ("raw", 1): 330, ("raw", 3): 330}


def synthetic(channels: int = 1, per_class: int = 100, size=(8, 8), seed: int = 0) -> RealData:
    """Classes of distinct brightness with coarse (4x4-pixel) and fine noise, so that the codecs at low quality
    still pay for every image; labels interleaved; normalised from uint8 as the loaders do."""
    generator = torch.Generator().manual_seed(seed)
    count = CLASSES * per_class
    labels = torch.arange(CLASSES).repeat(per_class)[torch.randperm(count, generator=generator)]
    coarse = torch.randint(-30, 31, (count, channels, size[0] // 4, size[1] // 4), generator=generator)
    coarse = coarse.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    fine = torch.randint(-15, 16, (count, channels, *size), generator=generator)
    pixels = (torch.tensor(BRIGHTNESS)[labels].view(-1, 1, 1, 1) + coarse + fine).to(torch.uint8)
    mean, std = (0.45,) * channels, (0.3,) * channels
    return RealData(name="synthetic", images=normalise(pixels, mean, std), labels=labels,
                    classes=[f"class-{c}" for c in range(CLASSES)], mean=mean, std=std,
                    source={"dataset": "synthetic", "split": "train"})


def drawn_pixels(real: RealData, label: int, count: int, seed: int) -> np.ndarray:
    """The first ``count`` images the baseline draws for ``label``, as uint8 [m, H, W, C], computed independently."""
    images = real.sample(label, count, generator=class_generator(seed, label))
    std = torch.tensor(real.std).view(1, -1, 1, 1)
    mean = torch.tensor(real.mean).view(1, -1, 1, 1)
    pixels = ((images * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def size_of(real: RealData, label: int, count: int, seed: int, kind: str, quality: int) -> int:
    return len(encode_mosaic(drawn_pixels(real, label, count, seed), kind, quality))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_every_class_fits_and_the_policy_is_maximal(kind, channels):
    real = synthetic(channels)
    budget = BUDGETS[kind, channels]
    baseline = build_baseline(real, kind, budget, seed=0, min_quality=10)
    assert [record["label"] for record in baseline.per_class] == list(range(CLASSES))
    for record in baseline.per_class:
        label, count, quality = record["label"], record["images"], record["quality"]
        assert 1 < count < 100  # neither capped by the class size nor trivial: maximality means something
        assert record["bytes"] <= budget
        assert size_of(real, label, count, 0, kind, quality) == record["bytes"]  # the record is what is sent
        assert size_of(real, label, count + 1, 0, kind, 10) > budget             # one more image does not fit
        assert quality == 100 or size_of(real, label, count, 0, kind, quality + 1) > budget  # nor a better quality
    assert baseline.total_bytes == sum(record["bytes"] for record in baseline.per_class) <= CLASSES * budget
    assert baseline.images.shape == (baseline.total_images, channels, 8, 8)
    assert baseline.images.dtype == torch.float32
    assert torch.equal(torch.bincount(baseline.labels), torch.tensor([r["images"] for r in baseline.per_class]))


def test_a_larger_minimum_quality_buys_fewer_images_at_a_higher_quality():
    real = synthetic()
    low = build_baseline(real, "jpeg", BUDGETS["jpeg", 1], min_quality=10)
    high = build_baseline(real, "jpeg", BUDGETS["jpeg", 1], min_quality=30)
    assert high.total_images < low.total_images
    assert min(record["quality"] for record in high.per_class) >= 30


@pytest.mark.parametrize("channels", [1, 3])
def test_raw_is_exact(channels):
    real = synthetic(channels)
    image_bytes = channels * 8 * 8
    baseline = build_baseline(real, "raw", 3 * image_bytes + image_bytes - 1, seed=4)
    assert [(r["images"], r["quality"], r["bytes"]) for r in baseline.per_class] == [(3, None, 3 * image_bytes)] * 3
    expected = torch.cat([real.sample(label, 3, generator=class_generator(4, label)) for label in range(CLASSES)])
    assert torch.equal(baseline.images, expected)  # uint8-born data survives the round trip bit for bit
    assert baseline.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # decoded pixels equal the rounded originals
    std, mean = torch.tensor(real.std).view(1, -1, 1, 1), torch.tensor(real.mean).view(1, -1, 1, 1)
    pixels = ((baseline.images * std + mean) * 255).round().to(torch.uint8)
    originals = torch.cat([torch.from_numpy(drawn_pixels(real, c, 3, 4)).permute(0, 3, 1, 2) for c in range(CLASSES)])
    assert torch.equal(pixels, originals)


def test_raw_caps_at_the_class_size():
    real = synthetic(per_class=5)
    baseline = build_baseline(real, "raw", 10**6)
    assert [record["images"] for record in baseline.per_class] == [5, 5, 5]


@pytest.mark.parametrize("kind", ["jpeg", "webp", "raw"])
def test_deterministic_under_the_seed_and_different_across_seeds(kind):
    real = synthetic(3)
    first, again = (build_baseline(real, kind, BUDGETS[kind, 3], seed=7) for _ in range(2))
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert first.per_class == again.per_class
    other = build_baseline(real, kind, BUDGETS[kind, 3], seed=8)
    count = min(first.total_images, other.total_images)
    assert not torch.equal(first.images[:count], other.images[:count])


@pytest.mark.parametrize("channels", [1, 3])
def test_decoded_tiles_are_the_drawn_images_of_their_class(channels):
    real = synthetic(channels)
    baseline = build_baseline(real, "jpeg", 20000, seed=2, min_quality=95)
    std, mean = torch.tensor(real.std).view(1, -1, 1, 1), torch.tensor(real.mean).view(1, -1, 1, 1)
    pixels = ((baseline.images * std + mean) * 255).round()
    start = 0
    for record in baseline.per_class:
        label, count = record["label"], record["images"]
        tiles = pixels[start:start + count]
        start += count
        brightness = tiles.mean(dim=(1, 2, 3))
        nearest = (brightness.view(-1, 1) - torch.tensor(BRIGHTNESS, dtype=torch.float32)).abs().argmin(dim=1)
        assert nearest.tolist() == [label] * count  # every image is of its own class
        drawn = torch.from_numpy(drawn_pixels(real, label, count, 2)).permute(0, 3, 1, 2).to(torch.float32)
        error = (tiles - drawn).abs().mean(dim=(1, 2, 3))
        shuffled = (tiles - drawn.roll(1, dims=0)).abs().mean(dim=(1, 2, 3))
        assert bool((error < 10).all()) and bool((error < shuffled).all())  # tile i is drawn image i, in order


@pytest.mark.parametrize("low, high", [(1, 1), (1, 2), (1, 300), (10, 100)])
def test_the_search_finds_the_last_fit_in_few_probes(low, high):
    for threshold in range(low, high + 1):
        probes = []
        found = _largest(lambda value: probes.append(value) or value <= threshold, low, high)
        assert found == threshold
        assert len(probes) <= 2 * max(1, high - low).bit_length() + NEIGHBOURS + 1


def test_the_search_follows_a_dip_just_past_the_first_miss():
    fits = {1, 2, 3, 4, 5, 7, 8}.__contains__  # 6 does not fit, 7 and 8 do (a size that dips at a grid change)
    assert _largest(fits, 1, 100) == 8
    assert _largest({1, 2, 3, 4, 5, 9}.__contains__, 1, 100) == 5  # further than NEIGHBOURS past it: not seen


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_one_mosaic_per_class_in_ceil_sqrt_columns(channels, mode):
    pixels = np.full((10, 8, 6, channels), 128, np.uint8)
    with Image.open(io.BytesIO(encode_mosaic(pixels, "jpeg", 50))) as image:
        assert image.format == "JPEG" and image.mode == mode and image.size == (4 * 6, 3 * 8)
    with Image.open(io.BytesIO(encode_mosaic(pixels, "webp", 50))) as image:
        assert image.format == "WEBP" and image.size == (4 * 6, 3 * 8)


@pytest.mark.parametrize("kind, budget", [("jpeg", 100), ("webp", 20), ("raw", 63)])
def test_a_budget_too_small_for_one_image_is_one_line(kind, budget):
    with pytest.raises(FredsetError) as caught:
        build_baseline(synthetic(), kind, budget)
    message = str(caught.value)
    assert "\n" not in message and f"{budget:,} bytes per class" in message and kind in message


@pytest.mark.parametrize("options", [dict(kind="png"), dict(bytes_per_class=0), dict(min_quality=0),
                                     dict(min_quality=101)])
def test_bad_options_are_refused(options):
    arguments = dict(kind="jpeg", bytes_per_class=1500) | options
    with pytest.raises(FredsetError):
        build_baseline(synthetic(), arguments.pop("kind"), arguments.pop("bytes_per_class"), **arguments)


def test_missing_pillow_is_one_line_telling_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # "import PIL" now raises ImportError
    with pytest.raises(FredsetError, match=r"pip install 'fredset\[images\]'") as caught:
        build_baseline(synthetic(), "jpeg", 1500)
    assert "\n" not in str(caught.value)
    assert build_baseline(synthetic(), "raw", 1500).total_images == 3 * (1500 // 64)  # raw needs no codec


@pytest.fixture
def toy(tmp_path):
    """A 3-class 12x12 npz dataset and a .fredset file of the same shape with a learned lr in it."""
    rng = np.random.default_rng(0)
    labels = np.arange(300) % CLASSES
    pixels = (rng.integers(0, 100, (300, 12, 12)) + 70 * labels[:, None, None]).astype(np.uint8)
    data = tmp_path / "toy.npz"
    np.savez(data, train_images=pixels, train_labels=labels, test_images=pixels[:60], test_labels=labels[:60])
    artifact = make_artifact(counts=(3, 3, 3), channels=1, size=(12, 12), k=16, mean=(0.45,), std=(0.3,),
                             provenance={"objective": "dm", "seed": 0, "budget": {"ipc": 1}, "recommended_lr": 0.05})
    file = tmp_path / "toy.fredset"
    save(artifact, file)
    return file, data


def test_evaluate_reports_each_baseline_at_the_files_bytes_per_class(toy):
    file, data = toy
    arguments = ["evaluate", str(file), "--dataset", str(data), "--runs", "1", "--epochs", "2", "--model", "convnetd1",
                 "--dsa", "none", "--device", "cpu"]
    result = CliRunner().invoke(cli, arguments + ["--baseline", "raw", "--baseline", "jpeg", "--baseline", "raw",
                                                  "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"protocol", "results", "file", "baselines"}
    assert list(report["baselines"]) == ["raw", "jpeg"]
    budget = file.stat().st_size // CLASSES
    assert report["protocol"]["lr"] == 0.05  # the file trains with its own lr ...
    train = load_dataset(data, split="train")
    for kind, entry in report["baselines"].items():
        assert entry["bytes_per_class"] == budget and entry["file_bytes"] == file.stat().st_size
        assert all(record["bytes"] <= budget for record in entry["per_class"])
        assert entry["protocol"]["lr"] == DEFAULT_LR  # ... a baseline with the protocol's default
        for key in ("runs", "epochs", "seed", "dsa", "test_images"):
            assert entry["protocol"][key] == report["protocol"][key]
        improvement = report["results"]["convnetd1"]["mean"] - entry["results"]["convnetd1"]["mean"]
        assert entry["improvement"]["convnetd1"] == pytest.approx(improvement, abs=1e-9)
        # the figures are those of the library's baseline trained by hand
        baseline = build_baseline(train, kind, budget, seed=0)
        assert entry["per_class"] == baseline.per_class
        by_hand = evaluate(baseline.images, baseline.labels, load_dataset(data, split="test"), models=("convnetd1",),
                           runs=1, epochs=2, lr=DEFAULT_LR, seed=0, dsa="none")
        assert entry["results"] == by_hand["results"]
    raw = report["baselines"]["raw"]
    assert [record["images"] for record in raw["per_class"]] == [min(budget // 144, 100)] * CLASSES
    assert raw["quality"] is None and report["baselines"]["jpeg"]["quality"]["min"] >= 10

    text = CliRunner().invoke(cli, arguments + ["--baseline", "webp", "--lr", "0.02"])
    assert text.exit_code == 0, text.output
    assert f"{budget:,} bytes per class" in text.stdout and "lr 0.02" in text.stdout
    assert "webp:" in text.stdout and "points" in text.stdout


def test_evaluate_refuses_a_budget_too_small_before_training(toy, tmp_path):
    file, _ = toy
    big = tmp_path / "big.npz"  # 3 x 200 x 200 RGB images: one raw image is 120,000 bytes, more than the file
    rng = np.random.default_rng(1)
    labels = np.arange(6) % CLASSES
    np.savez(big, train_images=rng.integers(0, 255, (6, 200, 200, 3), dtype=np.uint8), train_labels=labels,
             test_images=rng.integers(0, 255, (6, 200, 200, 3), dtype=np.uint8), test_labels=labels)
    result = CliRunner().invoke(cli, ["evaluate", str(file), "--dataset", str(big), "--baseline", "raw",
                                      "--runs", "1", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "bytes per class" in result.stderr
