"""Corruption robustness at equal budget: FreD (DM) against pixel DM and random real images.

    python bench/robustness_bench.py [--ipc 1] [--iterations 200] [--runs 3] [--epochs 300] [--severity 5]
                                     [--out docs/results/robustness_bench.json]

Three training sets of the same float budget (ipc images' worth of floats per class, FreD's unit), all from
the Fashion-MNIST training set with the same seed:
  fred     ``fredset distill --objective dm --ipc IPC`` (masked DCT coefficients, the default k),
  pixel    ``fredset distill --objective dm --parameterization pixel --ipc IPC`` (the same loop on pixels),
  random   IPC random real images per class.
Each trains --runs fresh ConvNets for --epochs epochs with the evaluation protocol, and every network is tested
on the clean test set and on its 15 corrupted copies (fredset.corruptions, CIFAR-10-C's constants scaled to
28 px, at --severity); the table gives accuracy per family and the mean over families, as the FreD paper's
robustness tables do. The file's and the baselines' networks see the same corrupted images. The distillation
runs far fewer iterations than the reference's 20,000 so the bench fits a session on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

from fredset.corruptions import FAMILIES, CorruptedTests  # noqa: E402
from fredset.data import load_dataset  # noqa: E402
from fredset.distill.config import DistillConfig  # noqa: E402
from fredset.distill.loop import distill  # noqa: E402
from fredset.evaluate import DEFAULT_LR, evaluate  # noqa: E402

METHODS = ("fred", "pixel", "random")


def training_set(method: str, train: Any, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, labels, facts) of one method's set at the bench's budget."""
    started = time.perf_counter()
    if method == "random":
        generator = torch.Generator().manual_seed(args.seed)
        blocks = [train.sample(label, args.ipc, generator=generator) for label in range(train.num_classes)]
        labels = torch.arange(train.num_classes).repeat_interleave(args.ipc)
        return torch.cat(blocks), labels, {"images_per_class": args.ipc}
    config = DistillConfig(dataset=train.name, objective="dm", ipc=args.ipc, iterations=args.iterations,
                           seed=args.seed, parameterization="freq" if method == "fred" else "pixel")
    artifact = distill(config.resolve(train), train)
    return artifact.decode(), artifact.labels, {"instances_per_class": artifact.counts[0], "k": artifact.k,
                                                "distill_seconds": round(time.perf_counter() - started, 1),
                                                "final_loss": artifact.provenance.get("final_loss")}


def table(points: dict[str, dict[str, Any]]) -> str:
    methods = list(points)
    lines = ["| test set | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]

    def row(name: str, pick) -> str:
        return f"| {name} | " + " | ".join(f"{pick(points[m])['mean']:.2f} +- {pick(points[m])['std']:.2f}"
                                          for m in methods) + " |"

    lines.append(row("clean", lambda p: p["clean"]))
    for family in FAMILIES:
        lines.append(row(family, lambda p, family=family: p["families"][family]))
    lines.append(row("mean of 15 families", lambda p: p["mean"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, default=1, help="Budget: images' worth of floats per class.")
    parser.add_argument("--iterations", type=int, default=200, help="DM iterations (fred and pixel).")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--severity", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data-root", help="Where Fashion-MNIST lies.")
    parser.add_argument("--out", default="docs/results/robustness_bench.json")
    args = parser.parse_args()
    train = load_dataset("fashion-mnist", split="train", root=args.data_root)
    test = load_dataset("fashion-mnist", split="test", root=args.data_root)
    points: dict[str, dict[str, Any]] = {}
    for method in args.methods.split(","):
        print(f"running {method}", file=sys.stderr, flush=True)
        images, labels, facts = training_set(method, train, args)
        started = time.perf_counter()
        report = evaluate(images, labels, test, runs=args.runs, epochs=args.epochs, lr=DEFAULT_LR, seed=args.seed,
                          corrupted=CorruptedTests(test, FAMILIES, (args.severity,), seed=args.seed))
        result = report["corruptions"]["results"]["convnet"]
        points[method] = {**facts, "images": int(len(images)), "clean": result["clean"],
                          "families": result["families"], "mean": result["mean"],
                          "evaluation_seconds": round(time.perf_counter() - started, 1)}
        print(f"{method}: clean {result['clean']['mean']:.2f}, corrupted mean {result['mean']['mean']:.2f}",
              file=sys.stderr, flush=True)
        write_json(Path(args.out), {"benchmark": "robustness_bench", "dataset": "fashion-mnist", "ipc": args.ipc,
                                    "iterations": args.iterations, "runs": args.runs, "epochs": args.epochs,
                                    "severity": args.severity, "seed": args.seed,
                                    "machine": machine("torch", "threads", "cpus", "cuda"), "points": points})
    print(table(points))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
