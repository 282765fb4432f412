"""fredset convert: the FreD reference implementation's torch.save output into a .fredset file."""

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fredset import FredDataset, FredsetError
from fredset.convert import PROVENANCE_NOTE, DatasetFacts, class_masks, convert, convert_reference, load_reference_file
from fredset.data.registry import dataset_spec
from fredset.dct import idct2

from conftest import one_line_error, run_cli as run


def reference_run(classes: int, per_class: int, channels: int, size: int, k: int, seed: int = 0):
    """What the reference's SynSet holds and saves: a dense mask [N, C, H, W], one plane per image, the same
    k frequencies for every image and channel of a class; images = inverse DCT of mask * F in float32
    (the reference's own DCT is unnormalised, but its inverse is exact, so the images are the same kind);
    labels class-sorted."""
    generator = torch.Generator().manual_seed(seed)
    count = classes * per_class
    mask = torch.zeros(count, channels, size, size)
    for label in range(classes):
        plane = torch.zeros(size * size)
        plane[torch.randperm(size * size, generator=generator)[:k]] = 1.0
        mask[label * per_class:(label + 1) * per_class] = plane.view(1, 1, size, size)
    frequencies = torch.randn(count, channels, size, size, generator=generator) * 3
    images = idct2(mask * frequencies).to(torch.float32)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return images, labels, mask


def save_run(folder, images, labels, mask, name="best"):
    torch.save(images, folder / f"images_{name}.pt")
    if labels is not None:
        torch.save(labels, folder / f"labels_{name}.pt")
    torch.save(mask, folder / "mask.pt")
    return folder / f"images_{name}.pt", folder / "mask.pt"


@dataclass
class Payload:  # a custom class: the restricted unpickler must refuse it
    value: int = 1


class Trap:
    """Unpickling this would create a directory; it must be refused before anything runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("dataset, channels, size, k", [("mnist", 1, 28, 49), ("cifar10", 3, 32, 64)])
def test_convert_reproduces_the_reference_images(tmp_path, dataset, channels, size, k):
    images, labels, mask = reference_run(10, 2, channels, size, k)
    images_path, mask_path = save_run(tmp_path, images, labels, mask)
    out = tmp_path / "ref.fredset"
    result = run("convert", images_path, "--mask", mask_path, "--dataset", dataset, "--out", out,
                 "--lr", "0.01", "--objective", "tm")
    assert result.exit_code == 0, result.output
    assert "20 images (2 per class, k %d)" % k in result.stdout and "round trip: max |difference|" in result.stdout
    assert "labels read from labels_best.pt" in result.stdout and result.stderr == ""
    data = FredDataset(out)
    scale = float(images.abs().max())
    assert torch.allclose(data.images, images, rtol=0, atol=1e-6 * scale)  # float32 rounding
    assert torch.equal(data.targets, labels)
    spec = dataset_spec(dataset)
    assert data.classes == list(spec.classes) and data.artifact.mean == spec.mean and data.artifact.std == spec.std
    assert data.artifact.k == k and data.recommended_lr == 0.01
    expected_masks = torch.stack([mask[label * 2, 0].flatten().nonzero()[:, 0] for label in range(10)])
    assert torch.equal(data.artifact.masks, expected_masks)
    provenance = data.artifact.provenance
    assert provenance["converted"] == PROVENANCE_NOTE and "reference implementation" in PROVENANCE_NOTE
    assert provenance["objective"] == "tm" and provenance["budget"]["ipc"] == 2 * k / size**2
    files = provenance["source"]["files"]
    assert files == {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
                     for name in ("images_best.pt", "labels_best.pt", "mask.pt")}
    conversion = provenance["conversion"]
    assert conversion["max_abs_error"] <= 1e-6 * scale and conversion["energy_outside_mask"] < 1e-10
    assert "origin          converted from the reference implementation" in run("inspect", out).stdout


def test_dc_dm_result_files_with_numpy_scalars(tmp_path):
    images, labels, mask = reference_run(10, 1, 1, 28, 49)
    other = images.flip(0)  # a second "experiment"
    result = {"data": [[(images, labels)], [(other, labels)]], "accs_all_exps": {"ConvNet": [np.float64(0.5)]}}
    torch.save(result, tmp_path / "res_DM_MNIST_ConvNet_1ipc.pt")
    torch.save(mask, tmp_path / "mask.pt")
    with pytest.raises(FredsetError, match="holds 2 experiments"):
        convert(tmp_path / "res_DM_MNIST_ConvNet_1ipc.pt", tmp_path / "mask.pt", "mnist")
    conversion = convert(tmp_path / "res_DM_MNIST_ConvNet_1ipc.pt", tmp_path / "mask.pt", "mnist", experiment=0)
    assert conversion.labels_from.startswith("saved with the images")
    assert torch.allclose(conversion.artifact.decode(), images, rtol=0, atol=1e-6 * float(images.abs().max()))
    # experiment 1's images are in another class order: they were not made with these masks
    assert convert(tmp_path / "res_DM_MNIST_ConvNet_1ipc.pt", tmp_path / "mask.pt", "mnist",
                   experiment=1).mask_mismatch


def test_labels_are_inferred_or_given_and_images_put_in_class_order(tmp_path):
    facts = DatasetFacts("toy", ("a", "b", "c"), (0.5,), (0.25,), 1, (8, 8))
    images, labels, mask = reference_run(3, 2, 1, 8, 5)
    torch.save(images, tmp_path / "synthetic.pt")  # no labels_X.pt beside it: class-sorted blocks inferred
    torch.save(mask, tmp_path / "mask.pt")
    conversion = convert(tmp_path / "synthetic.pt", tmp_path / "mask.pt", facts)
    assert conversion.labels_from == "inferred: class-sorted blocks of 2" and not conversion.reordered
    assert torch.allclose(conversion.artifact.decode(), images, atol=1e-5)
    order = torch.tensor([5, 0, 2, 4, 1, 3])  # shuffled: per-image masks and labels travel together
    torch.save(labels[order], tmp_path / "shuffled-labels.pt")
    torch.save(images[order], tmp_path / "shuffled.pt")
    torch.save(mask[order], tmp_path / "mask.pt")
    conversion = convert(tmp_path / "shuffled.pt", tmp_path / "mask.pt", facts,
                         labels_path=tmp_path / "shuffled-labels.pt")
    assert conversion.reordered
    stable = torch.argsort(labels[order], stable=True)
    assert torch.allclose(conversion.artifact.decode(), images[order][stable], atol=1e-5)
    torch.save(images[:5], tmp_path / "five.pt")
    torch.save(mask[:5], tmp_path / "mask.pt")
    with pytest.raises(FredsetError, match="not 3 equal class-sorted blocks"):
        convert(tmp_path / "five.pt", tmp_path / "mask.pt", facts)


def test_per_class_and_shared_mask_layouts():
    images, labels, mask = reference_run(3, 2, 3, 8, 5)
    per_class = mask[::2]  # [K, C, H, W]
    assert torch.equal(class_masks(per_class, labels, 3, 3, (8, 8)), class_masks(mask, labels, 3, 3, (8, 8)))
    assert torch.equal(class_masks(per_class[:, 0], labels, 3, 3, (8, 8)), class_masks(mask, labels, 3, 3, (8, 8)))
    shared = class_masks(mask[0, 0], labels, 3, 3, (8, 8))
    assert shared.shape == (3, 5) and (shared == shared[0]).all()


def corrupt(mask, how):
    mask = mask.clone()
    if how == "k":
        mask[2:4, :, 0, 0] = 1 - mask[2:4, :, 0, 0]  # class 1 keeps one frequency more or less
    elif how == "channels":
        mask[0:2, 1] = mask[2, 1]
    elif how == "instances":
        mask[1] = mask[2]
    elif how == "values":
        mask[0, 0, 0, 0] = 0.5
    elif how == "shape":
        mask = mask[:5]
    return mask


@pytest.mark.parametrize("how, message", [
    ("k", "needs the same k for every class"), ("channels", "differs between channels"),
    ("instances", "another mask than the class's first image"), ("values", "other than 0 and 1"),
    ("shape", "expected one per image")])
def test_masks_a_fredset_file_cannot_hold_are_refused(tmp_path, how, message):
    images, labels, mask = reference_run(3, 2, 3, 8, 5)
    facts = DatasetFacts("toy", ("a", "b", "c"), (0.5,) * 3, (0.25,) * 3, 3, (8, 8))
    with pytest.raises(FredsetError, match=message):
        convert_reference(images, corrupt(mask, how), labels, dataset=facts)


def test_cli_refuses_a_k_mismatch_in_one_line(tmp_path):
    images, labels, mask = reference_run(10, 1, 1, 28, 49)
    images_path, mask_path = save_run(tmp_path, images, labels, corrupt(mask, "k"))
    out = tmp_path / "ref.fredset"
    message = one_line_error(run("convert", images_path, "--mask", mask_path, "--dataset", "mnist", "--out", out))
    assert str(mask_path) in message and "same k" in message
    assert not out.exists()


@pytest.mark.parametrize("payload", ["dataclass", "reduce"])
def test_pickles_of_other_objects_are_refused_without_running_them(tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "images_best.pt"
    torch.save(Payload() if payload == "dataclass" else {"images": Trap(str(marker))}, path)
    images, labels, mask = reference_run(10, 1, 1, 28, 49)
    torch.save(mask, tmp_path / "mask.pt")
    with pytest.raises(FredsetError, match="refused: it holds a Python object"):
        load_reference_file(path)
    message = one_line_error(run("convert", path, "--mask", tmp_path / "mask.pt", "--dataset", "mnist",
                                 "--out", tmp_path / "x.fredset"))
    assert str(path) in message and "weights_only=True" in message
    assert ("Payload" if payload == "dataclass" else "mkdir") in message
    assert not marker.exists() and not (tmp_path / "x.fredset").exists()


def test_images_not_made_with_the_mask_warn(tmp_path):
    _, labels, mask = reference_run(10, 1, 1, 28, 49)
    images = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    images_path, mask_path = save_run(tmp_path, images, labels, mask)
    result = run("convert", images_path, "--mask", mask_path, "--dataset", "mnist", "--out", tmp_path / "x.fredset")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "not made with this mask" in result.stderr
    assert FredDataset(tmp_path / "x.fredset").artifact.provenance["conversion"]["energy_outside_mask"] > 0.5


def test_other_problems_give_one_line(tmp_path):
    images, labels, mask = reference_run(10, 1, 1, 28, 49)
    images_path, mask_path = save_run(tmp_path, images, labels, mask)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    for args, expected in [
            ((garbage, "--mask", mask_path, "--dataset", "mnist"), str(garbage)),
            ((images_path, "--mask", tmp_path / "missing.pt", "--dataset", "mnist"), "missing.pt"),
            ((images_path, "--mask", mask_path, "--dataset", "cifar10"), "but cifar10 images are 3x32x32"),
            ((images_path, "--mask", mask_path, "--dataset", "nonsense"), "unknown dataset"),
            ((images_path, "--mask", mask_path, "--dataset", "mnist", "--labels", mask_path), "integer tensor")]:
        assert expected in one_line_error(run("convert", *args, "--out", tmp_path / "x.fredset"))
    assert not (tmp_path / "x.fredset").exists()
