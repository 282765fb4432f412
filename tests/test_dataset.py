
import pytest
import torch
from torch.utils.data import DataLoader

from fredset import FredDataset, FredsetError, save
from fredset.format import to_bytes

from conftest import make_artifact


@pytest.fixture
def saved(tmp_path):
    artifact = make_artifact(counts=(5, 3, 4), channels=3, size=(8, 8), k=9,
                             classes=["cat", "dog", "emu"], provenance={"recommended_lr": 0.02})
    path = tmp_path / "d.fredset"
    save(artifact, path)
    return artifact, path


def test_torchvision_style_attributes(saved):
    artifact, path = saved
    dataset = FredDataset(path)
    assert len(dataset) == 12
    assert dataset.classes == ["cat", "dog", "emu"]
    assert dataset.class_to_idx == {"cat": 0, "dog": 1, "emu": 2}
    assert dataset.targets.tolist() == [0] * 5 + [1] * 3 + [2] * 4
    assert dataset.images.shape == (12, 3, 8, 8) and dataset.images.dtype == torch.float32
    assert torch.allclose(dataset.images, artifact.decode())
    assert dataset.recommended_lr == 0.02
    assert dataset.metadata["dataset"]["classes"] == ["cat", "dog", "emu"]
    image, label = dataset[6]
    assert torch.equal(image, dataset.images[6]) and label == 1 and isinstance(label, int)


def test_transforms_and_pixel_space(saved):
    artifact, path = saved
    dataset = FredDataset(path, transform=lambda x: x.flip(-1), target_transform=lambda y: y * 10,
                          pixel_space=True)
    assert torch.allclose(dataset.images, artifact.decode(pixel_space=True))
    assert dataset.images.min() >= 0 and dataset.images.max() <= 1
    image, label = dataset[11]
    assert torch.equal(image, dataset.images[11].flip(-1)) and label == 20


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_serves_every_item(saved, workers):
    _, path = saved
    dataset = FredDataset(path)
    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    assert sorted(labels.tolist()) == dataset.targets.tolist()
    # the multiset of (image, label) pairs is the dataset's
    expected = {(round(float(x.sum()), 4), int(y)) for x, y in zip(dataset.images, dataset.targets)}
    assert {(round(float(x.sum()), 4), int(y)) for x, y in zip(images, labels)} == expected
    assert len(labels) == len(dataset)


def test_batches_cover_the_dataset_once(saved):
    _, path = saved
    dataset = FredDataset(path)
    seen = torch.cat([labels for _, labels in dataset.batches(5, generator=torch.Generator().manual_seed(1))])
    assert sorted(seen.tolist()) == dataset.targets.tolist()
    sizes = [len(labels) for _, labels in dataset.batches(5, drop_last=True)]
    assert sizes == [5, 5]
    ordered = torch.cat([images for images, _ in dataset.batches(5, shuffle=False)])
    assert torch.equal(ordered, dataset.images)
    first = [labels.tolist() for _, labels in dataset.batches(4, generator=torch.Generator().manual_seed(3))]
    again = [labels.tolist() for _, labels in dataset.batches(4, generator=torch.Generator().manual_seed(3))]
    assert first == again
    with pytest.raises(FredsetError, match="batch_size"):
        next(dataset.batches(0))


def test_opens_bytes_and_refuses_bad_files(saved, tmp_path):
    artifact, path = saved
    assert len(FredDataset(to_bytes(artifact))) == 12
    (tmp_path / "junk.fredset").write_bytes(b"junk")
    with pytest.raises(FredsetError, match="junk.fredset"):
        FredDataset(tmp_path / "junk.fredset")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_request_without_cuda_is_refused_and_auto_uses_the_cpu(saved):
    _, path = saved
    with pytest.raises(FredsetError, match="CUDA is not available"):
        FredDataset(path, device="cuda")
    assert FredDataset(path, device="auto").images.device.type == "cpu"


def test_bad_device_is_a_fredset_error(saved):
    with pytest.raises(FredsetError, match="device"):
        FredDataset(saved[1], device="banana")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dataset_batches_on_device_and_refuses_workers(saved):
    artifact, path = saved
    dataset = FredDataset(path, device="cuda")
    assert dataset.images.is_cuda and dataset.targets.is_cuda
    assert torch.allclose(dataset.images.cpu(), artifact.decode(), atol=1e-5)
    images, labels = next(dataset.batches(4, generator=torch.Generator(device="cuda").manual_seed(0)))
    assert images.is_cuda and labels.is_cuda
    loader = DataLoader(dataset, batch_size=4, num_workers=2, timeout=60)
    # raised in the worker (fork) or when pickling the dataset for it (spawn); DataLoader re-raises the worker's
    # exception with its type, FredsetError being constructible from the message alone
    with pytest.raises(FredsetError, match="DataLoader workers cannot serve device tensors") as info:
        next(iter(loader))
    assert type(info.value) is FredsetError
