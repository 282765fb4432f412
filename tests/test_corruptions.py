"""Corruption robustness (fredset.corruptions, evaluate --corruptions / --corrupted-test): the 15 CIFAR-10-C
families on grey and RGB images of 28-64 px, their determinism, the published-array reader, the evaluation
table and the command line."""

from __future__ import annotations

import colorsys
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import make_artifact
from fredset import FredsetError, save
from fredset.corruptions import (BLOCK, FAMILIES, GROUPS, RANDOM_FAMILIES, CorruptedTests, corrupt,
                                 load_corrupted_test, parse_families, parse_severities, to_pixels)
from fredset.data import RealData, load_dataset
from fredset.data.statistics import normalise
from fredset.evaluate import evaluate
from fredset_cli.main import cli

SHAPES = [(1, 28), (3, 28), (1, 32), (3, 32), (3, 64)]
MODEL = "convnetd1"


def natural(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images smooth at the scale of the image (a bilinear 5x5 random field) with one sharp-edged rectangle,
    in [0.2, 0.8] away from the rectangle: what blur, noise and weather act on in real photographs."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 5, 5, generator=generator) * 0.6 + 0.2
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    quarter = size // 4
    images[:, :, quarter:2 * quarter + quarter // 2, quarter:3 * quarter] = torch.rand(n, channels, 1, 1,
                                                                                        generator=generator)
    return images


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a = (a - a.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    b = (b - b.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())


def test_the_fifteen_families_in_four_groups():
    assert len(FAMILIES) == 15 and len(set(FAMILIES)) == 15
    assert {group: len(names) for group, names in GROUPS.items()} == {"noise": 3, "blur": 4, "weather": 4,
                                                                       "digital": 4}
    assert FAMILIES[0] == "gaussian_noise" and FAMILIES[-1] == "jpeg_compression"  # CIFAR-10-C's order and names


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_keeps_shape_dtype_and_range_and_changes_the_images(family, channels, size):
    images = natural(3, channels, size)
    images[0] = 0.0   # extremes: the output must stay in [0, 1] from black and white images too
    images[1] = 1.0
    out = corrupt(images, family, 3, seed=0)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out[2:] - images[2:]).abs().mean()) > 1e-3, "the natural image is not corrupted"
    assert torch.equal(images[1], torch.ones_like(images[1]))   # the input is not modified in place


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 64)])
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "elastic_transform"])
def test_severity_5_corrupts_more_than_severity_1(family, channels, size):
    images = natural(6, channels, size)
    mild, severe = (corrupt(images, family, severity) for severity in (1, 5))
    if family == "frost":
        # c0·x + c1·frost: the image's weight falls (1 -> 0.75) while the texture's rises; with a mid-grey
        # texture the mean change can shrink, but the output resembles the image less
        assert correlation(images, severe) < correlation(images, mild) - 0.02
    else:
        assert float((severe - images).abs().mean()) > 1.1 * float((mild - images).abs().mean())


def test_elastic_severities_trade_affine_jitter_for_local_warps():
    """CIFAR-10-C's elastic constants are not monotone in pixel distance: severity 1 is an affine jitter of
    0.08·size and no warp, severity 5 a 0.03·size jitter plus a displacement field (alpha 0.1·size)."""
    images = natural(6, 3, 32)
    mild, severe = corrupt(images, "elastic_transform", 1), corrupt(images, "elastic_transform", 5)
    assert float((mild - images).abs().mean()) > float((severe - images).abs().mean()) > 5e-3
    # severity 1 is affine: differences of neighbouring pixels of a linear ramp stay equal (up to the borders)
    ramp = torch.linspace(0.2, 0.8, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32).contiguous()
    steps = corrupt(ramp, "elastic_transform", 1)[0, 0, 8:24, 8:24].diff(dim=1)
    assert float(steps.std()) < 1e-4 < float(corrupt(ramp, "elastic_transform", 5)[0, 0, 8:24, 8:24]
                                              .diff(dim=1).std())


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_under_the_seed_and_independent_of_order_and_global_rng(family):
    images = natural(4, 1, 28)
    first = corrupt(images, family, 4, seed=7)
    torch.manual_seed(123)
    np.random.seed(123)
    other = "fog" if family != "fog" else "snow"
    corrupt(images, other, 4, seed=7)                           # another family first: no shared stream
    state = torch.random.get_rng_state()
    again = corrupt(images, family, 4, seed=7)
    assert torch.equal(first, again)
    assert torch.equal(torch.random.get_rng_state(), state)     # the global RNG is never drawn from
    reseeded = corrupt(images, family, 4, seed=8)
    if family in RANDOM_FAMILIES:
        assert not torch.equal(first, reseeded)
    else:
        assert torch.equal(first, reseeded)                     # a function of the image alone


def test_each_image_depends_only_on_its_block():
    images = natural(BLOCK + 3, 1, 8, seed=1)
    whole = corrupt(images, "gaussian_noise", 2, seed=0)
    assert torch.equal(whole[:BLOCK], corrupt(images[:BLOCK], "gaussian_noise", 2, seed=0))
    assert not torch.equal(whole[BLOCK:], whole[:3])            # a new block draws afresh


def test_pixelate_is_pillows_box_resampling_down_and_up():
    Image = pytest.importorskip("PIL.Image")
    for channels, size in [(1, 28), (3, 32), (1, 64)]:
        images = natural(2, channels, size)
        out = corrupt(images, "pixelate", 5)
        small = int(size * 0.65)
        for n in range(2):
            for c in range(channels):
                plane = Image.fromarray(images[n, c].numpy(), mode="F")
                expected = np.asarray(plane.resize((small, small), Image.BOX).resize((size, size), Image.BOX))
                np.testing.assert_allclose(out[n, c].numpy(), expected, atol=2e-5)


def test_jpeg_compression_is_pillows_jpeg_at_the_severitys_quality():
    Image = pytest.importorskip("PIL.Image")
    for channels in (1, 3):
        images = natural(2, channels, 32)
        out = corrupt(images, "jpeg_compression", 5)
        pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for n in range(2):
            buffer = io.BytesIO()
            Image.fromarray(pixels[n, ..., 0] if channels == 1 else pixels[n]).save(buffer, "JPEG", quality=40)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).reshape(32, 32, channels)
            np.testing.assert_allclose(out[n].permute(1, 2, 0).numpy(), decoded / 255, atol=1e-6)


def test_brightness_adds_to_the_hsv_value_and_to_a_grey_pixel():
    rgb = natural(2, 3, 28)
    rgb[0, :, 0, 0] = 0.0                                       # black: becomes grey at the new value
    out = corrupt(rgb, "brightness", 5)                          # c = 0.3
    for n, y, x in [(0, 0, 0), (0, 5, 9), (1, 10, 10), (1, 27, 3)]:
        h, s, v = colorsys.rgb_to_hsv(*rgb[n, :, y, x].tolist())
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))
        np.testing.assert_allclose(out[n, :, y, x].numpy(), expected, atol=1e-5)
    grey = natural(2, 1, 28)
    torch.testing.assert_close(corrupt(grey, "brightness", 2), (grey + 0.1).clamp(max=1))


def test_contrast_keeps_each_channels_mean_and_scales_the_deviations():
    images = natural(3, 3, 32) * 0.5 + 0.25                     # no clipping at factor 0.15
    out = corrupt(images, "contrast", 5)
    mean = images.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out.mean(dim=(2, 3), keepdim=True), mean)
    torch.testing.assert_close(out - mean, 0.15 * (images - mean), atol=1e-6, rtol=1e-5)


def test_noise_families_have_the_cifar_10_c_strengths():
    grey = torch.full((4, 1, 32, 32), 0.5)
    assert float((corrupt(grey, "gaussian_noise", 5) - grey).std()) == pytest.approx(0.10, rel=0.05)
    assert float((corrupt(grey, "gaussian_noise", 1) - grey).std()) == pytest.approx(0.04, rel=0.05)
    shot = corrupt(grey, "shot_noise", 5)                        # Poisson(50 · 0.5) / 50: mean 0.5, std 0.1
    assert float(shot.mean()) == pytest.approx(0.5, abs=0.01) and float(shot.std()) == pytest.approx(0.1, rel=0.1)
    impulse = corrupt(torch.full((8, 3, 32, 32), 0.5), "impulse_noise", 5)
    flipped = impulse != 0.5
    assert float(flipped.float().mean()) == pytest.approx(0.07, rel=0.15)
    assert set(impulse[flipped].unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("family", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform",
                                    "pixelate"])
def test_geometric_families_keep_a_constant_image(family):
    flat = torch.full((2, 3, 28, 28), 0.5)
    expected = torch.full_like(flat, 127 / 255) if family == "glass_blur" else flat   # glass blur quantises
    torch.testing.assert_close(corrupt(flat, family, 5), expected, atol=1e-5, rtol=0)


def test_spatial_parameters_scale_with_the_image_size():
    """A motion-blur streak of a point is about twice as long at 64 px as at 32 px (size/32 rule)."""
    lengths = {}
    for size in (32, 64):
        point = torch.zeros(20, 1, size, size)
        point[:, :, size // 2, size - 2] = 1.0      # the streak runs leftwards (angles within 45 degrees)
        streak = corrupt(point, "motion_blur", 5)
        assert torch.allclose(streak.sum(dim=(1, 2, 3)), torch.ones(20), atol=1e-5)   # normalised kernel
        lengths[size] = float((streak > 1e-3).float().sum(dim=(1, 2, 3)).mean())
    assert 1.6 < lengths[64] / lengths[32] < 2.4


def test_corrupt_refuses_what_it_cannot_do():
    for arguments, message in [(("fog_blur", 3), "unknown corruption 'fog_blur'"), (("fog", 0), "severity"),
                               (("fog", 6), "severity")]:
        with pytest.raises(FredsetError, match=message):
            corrupt(natural(1, 1, 28), *arguments)
    with pytest.raises(FredsetError, match="1 or 3"):
        corrupt(torch.rand(1, 2, 28, 28), "fog", 3)
    with pytest.raises(FredsetError, match="at least 8 px"):
        corrupt(torch.rand(1, 1, 4, 4), "fog", 3)


def test_names_and_severities_from_the_command_line():
    assert parse_families("all") == FAMILIES
    assert parse_families("fog, snow,FOG") == ("snow", "fog")           # canonical order, once each
    with pytest.raises(FredsetError) as caught:
        parse_families("fog,rain")
    assert "'rain'" in str(caught.value) and all(name in str(caught.value) for name in FAMILIES)
    assert "\n" not in str(caught.value)
    assert parse_severities("all") == (1, 2, 3, 4, 5) and parse_severities(3) == (3,)
    with pytest.raises(FredsetError, match="1, 2, 3, 4, 5 or all"):
        parse_severities("6")


# ------------------------------------------------------------------------------------------- test sets

def tiny_test(channels: int = 3, count: int = 6, size: int = 8) -> RealData:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(count, channels, size, size, generator=generator)
    mean, std = (0.4,) * channels, (0.25,) * channels
    return RealData(name="tiny", images=normalise(pixels, mean, std), labels=torch.arange(count) % 3,
                    classes=["a", "b", "c"], mean=mean, std=std, source={"dataset": "tiny", "split": "test"})


def cifar_c_directory(path, test: RealData, families=("gaussian_noise", "fog")):
    """Arrays in the published layout: block s - 1 of <family>.npy holds severity s (pixel value 40·s + i)."""
    path.mkdir()
    count, (height, width) = len(test), test.image_size
    for family in families:
        blocks = [np.full((count, height, width, test.channels), 40 * severity, np.uint8) + np.arange(count,
                  dtype=np.uint8).reshape(-1, 1, 1, 1) for severity in range(1, 6)]
        np.save(path / f"{family}.npy", np.concatenate(blocks))
    np.save(path / "labels.npy", np.tile((np.arange(count) + 1) % 3, 5).astype(np.uint8))
    return path


def test_pixel_space_round_trip():
    test = tiny_test()
    pixels = to_pixels(test.images, test.mean, test.std)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 1
    torch.testing.assert_close(normalise(pixels, test.mean, test.std), test.images, atol=1e-6, rtol=0)


def test_generated_test_sets_are_the_corrupted_pixels_renormalised():
    test = tiny_test()
    copies = list(CorruptedTests(test, ("fog", "pixelate"), (2, 5), seed=3))
    assert [(family, severity) for family, severity, _, _ in copies] == [("fog", 2), ("fog", 5), ("pixelate", 2),
                                                                       ("pixelate", 5)]
    family, severity, images, labels = copies[1]
    expected = normalise(corrupt(to_pixels(test.images, test.mean, test.std), "fog", 5, seed=3), test.mean, test.std)
    torch.testing.assert_close(images, expected)
    assert torch.equal(labels, test.labels)


def test_published_arrays_are_read_by_severity_block(tmp_path):
    test = tiny_test()
    directory = cifar_c_directory(tmp_path / "CIFAR-10-C", test)
    images, labels = load_corrupted_test(directory, test, "fog", 3)
    pixels = (torch.full((6, 3, 8, 8), 120) + torch.arange(6).view(-1, 1, 1, 1)).to(torch.uint8)
    torch.testing.assert_close(images, normalise(pixels, test.mean, test.std))
    assert labels.tolist() == [1, 2, 0, 1, 2, 0]
    copies = list(CorruptedTests(test, ("gaussian_noise", "fog"), (1, 5), directory=directory))
    assert [(f, s) for f, s, _, _ in copies] == [("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 1), ("fog", 5)]
    assert float(to_pixels(copies[1][2], test.mean, test.std)[0].mean() * 255) == pytest.approx(200, abs=1e-3)
    grey = tiny_test(channels=1)                               # [5N, H, W] is accepted for one channel
    np.save(tmp_path / "grey.npy", np.zeros((30, 8, 8), np.uint8))
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "g" / "snow.npy", np.zeros((30, 8, 8), np.uint8))
    np.save(tmp_path / "g" / "labels.npy", np.zeros(6, np.int64))
    assert load_corrupted_test(tmp_path / "g", grey, "snow", 5)[0].shape == (6, 1, 8, 8)


@pytest.mark.parametrize("damage,message", [
    ("missing", "no corruption file fog.npy"),
    ("short", r"expected uint8 \[30, 8, 8, 3\].*found uint8 \[20, 8, 8, 3\]"),
    ("float", "found float32"),
    ("no labels", "no labels file labels.npy"),
    ("labels", r"labels outside 0\.\.2"),
    ("pickle", "cannot read .npy file"),
])
def test_wrong_published_arrays_are_one_line_errors(tmp_path, damage, message):
    test = tiny_test()
    directory = cifar_c_directory(tmp_path / "c", test)
    if damage == "missing":
        (directory / "fog.npy").unlink()
    elif damage == "short":
        np.save(directory / "fog.npy", np.zeros((20, 8, 8, 3), np.uint8))
    elif damage == "float":
        np.save(directory / "fog.npy", np.zeros((30, 8, 8, 3), np.float32))
    elif damage == "no labels":
        (directory / "labels.npy").unlink()
    elif damage == "labels":
        np.save(directory / "labels.npy", np.full(30, 7, np.uint8))
    else:
        np.save(directory / "fog.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FredsetError, match=message) as caught:
        CorruptedTests(test, ("gaussian_noise", "fog"), (5,), directory=directory)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------- evaluation

def quadrant_data(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(per_class)
    images = 0.5 * torch.randn(len(labels), 1, 8, 8, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, column = divmod(label, 2)
        images[index, 0, 4 * row:4 * row + 4, 4 * column:4 * column + 4] += 1.0
    return images, labels


def test_evaluate_tests_the_same_networks_on_every_corrupted_copy():
    images, labels = quadrant_data(20, seed=0)
    test_images, test_labels = quadrant_data(30, seed=1)
    test = RealData("quadrants", test_images, test_labels, ["tl", "tr", "bl"], (0.0,), (1.0,), {"split": "test"})
    common = dict(models=(MODEL,), runs=2, epochs=6, lr=0.01, dsa="none", seed=0)
    plain = evaluate(images, labels, test, **common)
    assert "corruptions" not in plain                               # the report is unchanged without them
    heard = []
    corrupted = [("same", 1, test_images, test_labels), ("same", 2, test_images, test_labels),
                 ("wrong", 1, test_images, (test_labels + 1) % 3), ("wrong", 2, test_images, test_labels)]
    report = evaluate(images, labels, test, corrupted=corrupted,
                      on_corrupted=lambda family, severity, accuracies: heard.append((family, severity)), **common)
    assert report["results"] == plain["results"]                     # the same networks as without corruptions
    assert heard == [("same", 1), ("same", 2), ("wrong", 1), ("wrong", 2)]
    table = report["corruptions"]
    assert table["families"] == ["same", "wrong"] and table["severities"] == [1, 2]
    result = table["results"][MODEL]
    assert result["clean"] == {"mean": plain["results"][MODEL]["mean"], "std": plain["results"][MODEL]["std"]}
    assert result["families"]["same"]["accuracies"] == plain["results"][MODEL]["accuracies"]
    assert plain["results"][MODEL]["mean"] > 80
    wrong = result["families"]["wrong"]                                # the mean of its two severities, per run
    for run in range(2):
        assert wrong["accuracies"][run] == pytest.approx(
            (wrong["severities"]["1"]["accuracies"][run] + wrong["severities"]["2"]["accuracies"][run]) / 2, abs=0.01)
    assert wrong["severities"]["1"]["mean"] < 20 and wrong["severities"]["2"]["mean"] > 80
    assert result["mean"]["mean"] == pytest.approx((result["families"]["same"]["mean"] + wrong["mean"]) / 2, abs=0.01)


# ------------------------------------------------------------------------------------------- command line

@pytest.fixture
def toy(tmp_path):
    """A 3-class 12x12 grey npz dataset (60 test images) and a .fredset file of its shape."""
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    pixels = (rng.integers(0, 100, (120, 12, 12)) + 70 * labels[:, None, None]).astype(np.uint8)
    data = tmp_path / "toy.npz"
    np.savez(data, train_images=pixels[60:], train_labels=labels[60:], test_images=pixels[:60],
             test_labels=labels[:60])
    file = tmp_path / "toy.fredset"
    save(make_artifact(counts=(3, 3, 3), channels=1, size=(12, 12), k=16, mean=(0.45,), std=(0.3,)), file)
    return file, data


def run_evaluate(file, data, *arguments):
    return CliRunner().invoke(cli, ["evaluate", str(file), "--dataset", str(data), "--runs", "1", "--epochs", "1",
                                    "--model", MODEL, "--dsa", "none", "--device", "cpu", *map(str, arguments)])


def test_cli_prints_the_fifteen_family_table(toy):
    file, data = toy
    result = run_evaluate(file, data, "--corruptions", "all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("corruption robustness: 15 families"))
    assert "severity 5" in lines[start] and "seed 0" in lines[start]
    assert lines[start + 1].split() == ["family", MODEL]
    assert lines[start + 2].split()[0] == "clean"
    assert [line.split()[0] for line in lines[start + 3:start + 18]] == list(FAMILIES)
    assert lines[start + 18].startswith("  mean (15 families)")
    assert "gaussian_noise (severity 5)" in result.stderr           # progress per corrupted copy

    as_json = run_evaluate(file, data, "--corruptions", "all", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert {"protocol", "results", "file", "corruptions"} <= set(report)
    table = report["corruptions"]
    assert table["families"] == list(FAMILIES) and table["severities"] == [5] and table["source"] == "generated"
    families = table["results"][MODEL]["families"]
    assert list(families) == list(FAMILIES)
    assert table["results"][MODEL]["mean"]["mean"] == pytest.approx(
        sum(entry["mean"] for entry in families.values()) / 15, abs=0.01)
    assert table["results"][MODEL]["clean"]["mean"] == report["results"][MODEL]["mean"]
    plain = json.loads(run_evaluate(file, data, "--json").stdout)
    assert "corruptions" not in plain and plain["results"] == report["results"]


def test_cli_reads_published_arrays_and_refuses_bad_options(toy, tmp_path):
    file, data = toy
    test = load_dataset(data, split="test")
    directory = cifar_c_directory(tmp_path / "c10c", test, families=("snow",))
    result = run_evaluate(file, data, "--corrupted-test", directory, "--corruptions", "snow", "--severity", "2",
                          "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["corruptions"]
    assert table["source"] == "directory" and table["families"] == ["snow"] and table["severities"] == [2]
    text = run_evaluate(file, data, "--corrupted-test", directory, "--corruptions", "snow")
    assert text.exit_code == 0 and f"read from {directory}" in text.stdout
    for arguments, message in [(("--corruptions", "rain"), "unknown corruption 'rain'"),
                               (("--severity", "2"), "--severity needs --corruptions"),
                               (("--corruptions", "fog", "--severity", "9"), "--severity must be"),
                               (("--corrupted-test", directory), "no corruption file gaussian_noise.npy")]:
        refused = run_evaluate(file, data, *arguments)
        assert refused.exit_code == 2, refused.output
        assert message in refused.stderr and refused.stderr.count("\n") == 1
