"""The benchmark networks: sizes, shapes, names and a short training run."""

from __future__ import annotations

import pytest
import torch

from fredset.errors import FredsetError
from fredset.models import MODEL_NAMES, ConvNet, build_model


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _batch(shape, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def test_model_names():
    assert MODEL_NAMES == ("convnet", "alexnet", "vgg11", "resnet18")


@pytest.mark.parametrize("channels, size, expected", [(3, (32, 32), 320_010), (1, (28, 28), 317_706)])
def test_convnet_parameter_count(channels, size, expected):
    assert _count(ConvNet(channels, 10, size)) == expected
    assert _count(build_model("convnet", channels, 10, size)) == expected


@pytest.mark.parametrize("channels, size", [(3, (32, 32)), (1, (28, 28))])
def test_convnet_embed_size(channels, size):
    model = ConvNet(channels, 10, size)
    assert model.embed(_batch((channels, *size))).shape == (2, 2048)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (32, 32))])
def test_forward_and_embed_shapes(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, channels, 10, size)
    x = _batch((channels, *size))
    with torch.no_grad():
        logits = model(x)
        features = model.embed(x)
    assert logits.shape == (2, 10)
    assert features.ndim == 2 and features.shape[0] == 2
    assert features.shape[1] == model.classifier.in_features
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_forward_64x64(name):
    model = build_model(name, 3, 7, (64, 64))
    with torch.no_grad():
        assert model(_batch((3, 64, 64), batch=1)).shape == (1, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_embed_accepts_non_contiguous_input(name):
    model = build_model(name, 3, 10, (32, 32))
    x = _batch((3, 32, 32)).transpose(2, 3)
    assert not x.is_contiguous()
    with torch.no_grad():
        features = model.embed(x)
        expected = model.embed(x.contiguous())
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_convnet_depth_variants(depth):
    model = build_model(f"ConvNetD{depth}", 3, 10, (32, 32))
    assert isinstance(model, ConvNet)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == depth
    side = 32 // 2 ** depth
    assert model.classifier.in_features == 128 * side * side
    with torch.no_grad():
        assert model(_batch((3, 32, 32))).shape == (2, 10)


def test_names_are_case_insensitive_and_width_depth_apply():
    assert isinstance(build_model("CONVNET", 1, 10, (28, 28)), ConvNet)
    assert type(build_model("ResNet18", 3, 10, (32, 32))).__name__ == "ResNet18"
    model = build_model("convnet", 3, 10, (32, 32), width=16, depth=2)
    assert model.classifier.in_features == 16 * 8 * 8


@pytest.mark.parametrize("name", ["lenet", "convnetd0", "convnetd6", "", "convnet3"])
def test_unknown_name_raises(name):
    with pytest.raises(FredsetError) as info:
        build_model(name, 3, 10, (32, 32))
    message = str(info.value)
    assert "\n" not in message
    for known in MODEL_NAMES:
        assert known in message


def test_too_small_image_raises():
    with pytest.raises(FredsetError):
        build_model("convnetd5", 3, 10, (16, 16))


def test_convnet_trains():
    torch.manual_seed(0)
    model = ConvNet(3, 4, (16, 16), width=16)
    x = _batch((3, 16, 16), batch=8, seed=1)
    y = torch.arange(8) % 4
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
