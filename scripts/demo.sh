#!/usr/bin/env bash
# The main job, end to end on Fashion-MNIST on the CPU (about 5 minutes on 2 cores after set-up):
# distil DM + FreD at ipc 1 with a short schedule, evaluate it with the standard protocol
# (one network, 300 epochs), and inspect the file, with pictures of its images and masks.
# Full-length settings: see README.md, "Full-length runs".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
mkdir -p demo
fredset distill --dataset fashion-mnist --objective dm --ipc 1 --k 64 --iterations 150 \
    --checkpoint-every 50 --out demo/fmnist-dm-ipc1.fredset
fredset evaluate demo/fmnist-dm-ipc1.fredset --runs 1 --epochs 300
fredset inspect demo/fmnist-dm-ipc1.fredset --grid demo/fmnist-dm-ipc1.png --masks demo/fmnist-dm-ipc1-masks.png
