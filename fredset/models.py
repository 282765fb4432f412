"""The networks of the dataset-distillation benchmark: ConvNet, AlexNet, VGG11 and ResNet18.

Every network offers ``embed(x)``, the flattened features that feed the final linear layer (what distribution
matching compares), and ``forward(x)``, the logits. Features are flattened with ``flatten(1)``, so inputs that
are not contiguous in memory (a transposed or sliced batch) work.

Conventions shared with the reference implementation:

* "Instance norm" is ``GroupNorm(c, c, affine=True)``: one group per channel, with a learned scale and shift.
* Single-channel inputs (the MNIST family, 28x28) get a wider padding on the first convolution
  (3 for the 3x3 convolutions of ConvNet and VGG11, 4 for the 5x5 one of AlexNet), so a 28x28 image goes
  through the network as if it were 32x32. The rule keys on the channel count, as the reference does.
* Weights keep PyTorch's default initialisation.

The size of the classifier is computed from ``image_size``, so any image size works as long as the feature map
does not shrink to nothing; a size that is too small raises :class:`~fredset.errors.FredsetError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import FredsetError

__all__ = ["MODEL_NAMES", "AlexNet", "ConvNet", "ResNet18", "VGG11", "build_model"]

MODEL_NAMES: tuple[str, ...] = ("convnet", "alexnet", "vgg11", "resnet18")

_MAX_CONVNET_DEPTH = 5


def _instance_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels, channels, affine=True)


def _conv_size(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_common(channels: int, num_classes: int, image_size: Sequence[int]) -> tuple[int, int]:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise FredsetError(f"channels must be a positive integer, got {channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise FredsetError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        height, width = (int(side) for side in image_size)
    except (TypeError, ValueError):
        raise FredsetError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise FredsetError(f"image_size must be positive, got {tuple(image_size)!r}")
    return height, width


def _check_map(name: str, height: int, width: int, image_size: tuple[int, int]) -> None:
    if height < 1 or width < 1:
        raise FredsetError(f"image size {image_size[0]}x{image_size[1]} is too small for {name}: "
                           f"its feature map shrinks to {height}x{width}")


class _FeaturesThenLinear(nn.Module):
    """A network whose ``features`` end in a map that one linear ``classifier`` reads, flattened."""

    features: nn.Module
    classifier: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNet(_FeaturesThenLinear):
    """``depth`` blocks of [conv 3x3 -> instance norm -> ReLU -> average pool 2x2], then one linear layer.

    The default (width 128, depth 3) is the ConvNetD3 of the benchmark: 320,010 parameters at 3x32x32 with
    10 classes, 317,706 at 1x28x28, 2048 features in both cases.
    """

    def __init__(self, channels: int, num_classes: int, image_size: Sequence[int], width: int = 128,
                 depth: int = 3) -> None:
        super().__init__()
        height, wide = _check_common(channels, num_classes, image_size)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise FredsetError(f"ConvNet width must be a positive integer, got {width!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise FredsetError(f"ConvNet depth must be a positive integer, got {depth!r}")
        layers: list[nn.Module] = []
        in_channels = channels
        for index in range(depth):
            padding = 3 if (channels == 1 and index == 0) else 1
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=padding),
                       _instance_norm(width), nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2)]
            height = _conv_size(height, 3, padding) // 2
            wide = _conv_size(wide, 3, padding) // 2
            in_channels = width
        _check_map(f"a depth-{depth} ConvNet", height, wide, (int(image_size[0]), int(image_size[1])))
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * height * wide
        self.classifier = nn.Linear(self.feature_dim, num_classes)


class AlexNet(_FeaturesThenLinear):
    """The benchmark's small AlexNet (no normalisation): five convolutions, three max pools, one linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: Sequence[int]) -> None:
        super().__init__()
        height, wide = _check_common(channels, num_classes, image_size)
        first_padding = 4 if channels == 1 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=first_padding), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        height = _conv_size(height, 5, first_padding) // 2 // 2 // 2
        wide = _conv_size(wide, 5, first_padding) // 2 // 2 // 2
        _check_map("AlexNet", height, wide, (int(image_size[0]), int(image_size[1])))
        self.feature_dim = 192 * height * wide
        self.classifier = nn.Linear(self.feature_dim, num_classes)


_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(_FeaturesThenLinear):
    """VGG11 with instance norm after every convolution; 1x1 final map at 32x32, one linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: Sequence[int]) -> None:
        super().__init__()
        height, wide = _check_common(channels, num_classes, image_size)
        layers: list[nn.Module] = []
        in_channels = channels
        first = True
        for item in _VGG11_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, wide = height // 2, wide // 2
                continue
            padding = 3 if (channels == 1 and first) else 1
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=padding), _instance_norm(item),
                       nn.ReLU()]
            height, wide = _conv_size(height, 3, padding), _conv_size(wide, 3, padding)
            in_channels = item
            first = False
        _check_map("VGG11", height, wide, (int(image_size[0]), int(image_size[1])))
        self.features = nn.Sequential(*layers)
        self.feature_dim = 512 * height * wide
        self.classifier = nn.Linear(self.feature_dim, num_classes)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = _instance_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm2 = _instance_norm(planes)
        self.relu = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), _instance_norm(planes))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 (BasicBlock [2, 2, 2, 2]) with instance norm, a CIFAR stem (3x3 conv, stride 1) and global
    average pooling, so it accepts any image size of at least 1x1."""

    def __init__(self, channels: int, num_classes: int, image_size: Sequence[int]) -> None:
        super().__init__()
        _check_common(channels, num_classes, image_size)
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm1 = _instance_norm(64)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        return self.pool(self.layers(out)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


_CONVNET_DEPTH_NAME = re.compile(r"convnetd(\d+)")


def build_model(name: str, channels: int, num_classes: int, image_size: tuple[int, int], *, width: int = 128,
                depth: int = 3) -> nn.Module:
    """Build one of the benchmark networks by name (case-insensitive).

    ``name`` is one of :data:`MODEL_NAMES` or ``"convnetd1"`` .. ``"convnetd5"`` (a ConvNet of that depth, which
    overrides ``depth``). ``width`` and ``depth`` only concern ConvNet. An unknown name raises
    :class:`~fredset.errors.FredsetError`.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key == "convnet":
        return ConvNet(channels, num_classes, image_size, width=width, depth=depth)
    match = _CONVNET_DEPTH_NAME.fullmatch(key) if key is not None else None
    if match is not None and 1 <= int(match.group(1)) <= _MAX_CONVNET_DEPTH:
        return ConvNet(channels, num_classes, image_size, width=width, depth=int(match.group(1)))
    if key == "alexnet":
        return AlexNet(channels, num_classes, image_size)
    if key == "vgg11":
        return VGG11(channels, num_classes, image_size)
    if key == "resnet18":
        return ResNet18(channels, num_classes, image_size)
    known = ", ".join(MODEL_NAMES + tuple(f"convnetd{d}" for d in range(1, _MAX_CONVNET_DEPTH + 1)))
    raise FredsetError(f"unknown model {name!r}; known models: {known}")


def init_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw ``model``'s parameters as PyTorch's defaults do, but from ``generator``.

    Conv and linear weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what
    kaiming_uniform_(a=sqrt(5)) and the default bias rule give); norm layers to weight 1, bias 0.
    Fresh networks in distillation and evaluation are then reproducible from one explicit
    generator, without touching the global RNG.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)) and module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
    return model


# Activation elements per micro-batch: 16 MB in float32, 32 images of ConvNetD3's first 128x32x32 map.
ACTIVATION_CHUNK = 2**22


def micro_batch_size(image_size: Sequence[int], width: int = 128) -> int:
    """Images per micro-batch whose widest activation (``width`` channels at (H+4)x(W+4)) stays ~16 MB.

    Tensors that size are recycled by the C allocator; a whole batch's (134 MB for 256 images) are
    mmapped, freed and page-faulted afresh at every step, which cost TM and training here up to half
    their time (docs/RESULTS.md). None of our networks mixes samples (no batch norm), so splitting a
    batch changes nothing but rounding.
    """
    height, wide = (int(size) for size in image_size)
    return max(1, ACTIVATION_CHUNK // (width * (height + 4) * (wide + 4)))


def backward_in_micro_batches(net: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                              micro_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate the batch's mean cross-entropy micro-batch by micro-batch (the same gradients as one
    pass); returns the detached mean loss and logits."""
    total = images.new_zeros(())
    logits = []
    for part, part_targets in zip(torch.split(images, micro_batch), torch.split(targets, micro_batch)):
        output = net(part)
        loss = F.cross_entropy(output, part_targets, reduction="sum") / len(images)
        loss.backward()
        total += loss.detach()
        logits.append(output.detach())
    return total, torch.cat(logits)
