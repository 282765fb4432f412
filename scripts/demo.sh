#!/usr/bin/env bash
# The main job, end to end on Fashion-MNIST (CPU, about a minute after set-up).
# Until `fredset distill` / `fredset evaluate` land (distillation engine), it writes FreD's
# initialisation (the DCT of real images under the EVR mask, ipc 1, k 64), inspects it and
# loads it for training with FredDataset.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
mkdir -p demo
python bench/artifacts.py fashion-mnist --per-class 12 --k 64 --out demo/fmnist-init.fredset
fredset inspect demo/fmnist-init.fredset --grid demo/fmnist-init.png --masks demo/fmnist-masks.png
python - <<'PY'
from torch.utils.data import DataLoader
from fredset import FredDataset

dataset = FredDataset("demo/fmnist-init.fredset")
images, labels = next(iter(DataLoader(dataset, batch_size=len(dataset))))
print(f"{dataset!r}: one batch {tuple(images.shape)}, classes {dataset.classes[:3]}...")
PY
