"""Accuracy per byte: fredset files against random real images compressed to the same bytes per class.

    python bench/bytes_bench.py [--bytes 784,1568,3136,6272] [--methods dm,jpeg,webp,raw] [--iterations 200]
                                [--k K,...] [--bits B,...] [--lr LR,...] [--nets 3] [--epochs 300]
                                [--validation 0] [--work DIR] [--out docs/results/bytes_bench.json]

For every budget B (bytes per class) and method, one training set of the same bytes per class:
  dm, dc, tm   ``fredset distill --objective X --bytes-per-class B`` (the whole .fredset file, header, HDF5,
               metadata, masks, steps and codes, is at most B times the classes), evaluated on the images its
               file decodes to;
  jpeg, webp   random real images, one mosaic per class, at the best quality that fits the most images
               (fredset.baselines; only the codec's bytes count);
  raw          B // (C*H*W) random real images per class as uint8.
Every set trains --nets fresh ConvNets for --epochs epochs with the evaluation protocol (SGD 0.9 / 5e-4,
batch 256, lr 0.01 x0.1 halfway, DSA), accuracy after the last epoch on the full test set; with
``--validation N`` on N images per class held out of the training set instead (tuning; the distillation and the
baselines then draw only from the rest). Results are written after every point and a rerun skips the points
already in --out with the same settings, so the bench can be run piece by piece. --k, --bits, --iterations and
--lr take comma-separated lists: the distilled methods run every combination (a tuning sweep; points with other
settings stay in --out). A table is printed and a PNG plot (accuracy against bytes per class, log axis, one line
per method and setting) is drawn next to the JSON. With ``--work DIR`` every distilled point keeps its file
(DIR/<method>-<budget>-<settings>-<iterations>.fredset) and a checkpoint shared by the points that differ only
in iterations: the iteration counts run in increasing order, each resuming where the last stopped (a resumed
run equals an uninterrupted one), and an interrupted bench resumes too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

from fredset import load_bytes  # noqa: E402
from fredset.baselines import build_baseline  # noqa: E402
from fredset.data import hold_out, load_dataset  # noqa: E402
from fredset.distill.budget import fit_within  # noqa: E402
from fredset.distill.config import DistillConfig  # noqa: E402
from fredset.distill.loop import distill  # noqa: E402
from fredset.evaluate import DEFAULT_LR, evaluate  # noqa: E402
from fredset.quantize import STEP_FRACTION_BITS  # noqa: E402

DISTILLED = ("dm", "dc", "tm")
BASELINES = ("jpeg", "webp", "raw")
COLOURS = {"dm": (200, 30, 30), "dc": (230, 120, 0), "tm": (150, 0, 150), "jpeg": (30, 90, 200),
           "webp": (0, 150, 150), "raw": (90, 90, 90)}


BEFORE_SETTING = {"step_fraction_bits": 10}  # what the points stored before a setting existed had


def listed(text: str | None, kind: type) -> list[Any]:
    """A comma-separated option as a list ([None] when not given: the library's default)."""
    return [kind(item) for item in text.split(",")] if text else [None]


def variants(args: argparse.Namespace, method: str) -> list[dict[str, Any]]:
    """The settings of every point one method runs at one budget; a stored point with the same settings is
    not run again."""
    common = {"nets": args.nets, "epochs": args.epochs, "validation": args.validation, "seed": args.seed}
    if method not in DISTILLED:
        return [common]
    # mask_source only when asked for, so that the points stored before it existed keep their settings; the
    # steps' precision because it changed (points without it had full float16 steps)
    return [{**common, "iterations": iterations, "bits": bits, "k": k, "lr": lr,
             **({"mask_source": source} if source else {}), "step_fraction_bits": STEP_FRACTION_BITS}
            for iterations in sorted(listed(args.iterations, int)) for bits in listed(args.bits, int)
            for k in listed(args.k, int) for lr in listed(args.lr, float) for source in listed(args.mask_source, str)]


def stored(path: Path) -> list[dict[str, Any]]:
    """The points already in ``path`` (none if it does not exist)."""
    return json.loads(path.read_text())["points"] if path.exists() else []


def label(point: dict[str, Any], points: list[dict[str, Any]]) -> str:
    """The method, with the settings that tell its points at one budget apart when there are several."""
    mine = [{**BEFORE_SETTING, **p["settings"]} for p in points if p["method"] == point["method"]]
    varying = [key for key in ("k", "bits", "iterations", "lr", "mask_source", "step_fraction_bits")
               if len({str(s.get(key)) for s in mine}) > 1]
    settings = {**BEFORE_SETTING, **point["settings"]}
    return " ".join([point["method"]] + [f"{key} {settings.get(key)}" for key in varying])


def work_paths(work: Path, method: str, budget: int, setting: dict[str, Any]) -> tuple[Path, Path]:
    """(checkpoint, file) of one distilled point under --work; the checkpoint is shared by the points that
    differ only in iterations (and in how they are evaluated)."""
    run_key = {key: value for key, value in setting.items() if key not in ("iterations", "nets", "epochs")}
    digest = hashlib.sha256(json.dumps(run_key, sort_keys=True).encode()).hexdigest()[:10]
    stem = f"{method}-{budget}-{digest}"
    return work / f"{stem}.ckpt", work / f"{stem}-{setting['iterations']}.fredset"


def training_set(method: str, budget: int, train: Any, args: argparse.Namespace,
                 setting: dict[str, Any]) -> tuple[Any, Any, dict, float]:
    """(images, labels, facts about the set, learning rate) for one point."""
    started = time.perf_counter()
    if method in DISTILLED:
        config = DistillConfig(dataset=train.name, objective=method, bytes_per_class=budget,
                               iterations=setting["iterations"], seed=args.seed, bits=setting["bits"],
                               k=setting["k"], lr=setting["lr"], mask_source=setting.get("mask_source") or "init",
                               options={"buffer": args.buffer} if method == "tm" else None)
        checkpoint = kept = None
        if args.work:
            args.work.mkdir(parents=True, exist_ok=True)
            checkpoint, kept = work_paths(args.work, method, budget, setting)
        artifact = distill(config.resolve(train), train, checkpoint=checkpoint, checkpoint_every=50, resume=True)
        artifact, data = fit_within(artifact, budget * train.num_classes)
        if kept is not None:
            kept.write_bytes(data)
        decoded = load_bytes(data)  # evaluate what the file holds
        budget_record = decoded.provenance.get("budget", {})
        facts = {"file_bytes": len(data), "bytes_per_class": len(data) / train.num_classes,
                 "instances_per_class": decoded.counts, "k": decoded.k, "bits": budget_record.get("bits"),
                 "dropped_to_fit": budget_record.get("dropped_to_fit", 0),
                 "distill_seconds": round(time.perf_counter() - started, 1)}
        lr = decoded.provenance.get("recommended_lr") or DEFAULT_LR
        return decoded.decode(), decoded.labels, facts, lr
    baseline = build_baseline(train, method, budget, seed=args.seed)
    summary = baseline.summary()
    facts = {"bytes_per_class": baseline.total_bytes / train.num_classes,
             "instances_per_class": [record["images"] for record in baseline.per_class],
             "quality": summary["quality"], "build_seconds": round(time.perf_counter() - started, 1)}
    return baseline.images, baseline.labels, facts, DEFAULT_LR


def run_point(method: str, budget: int, train: Any, test: Any, args: argparse.Namespace,
              setting: dict[str, Any]) -> dict[str, Any]:
    images, labels, facts, lr = training_set(method, budget, train, args, setting)
    started = time.perf_counter()
    report = evaluate(images, labels, test, runs=args.nets, epochs=args.epochs, lr=lr, seed=args.seed)
    result = report["results"]["convnet"]
    return {"method": method, "bytes_per_class_budget": budget, **facts, "images": int(len(images)), "lr": lr,
            "accuracies": result["accuracies"], "mean": result["mean"], "std": result["std"],
            "evaluation_seconds": round(time.perf_counter() - started, 1), "settings": setting}


def table(points: list[dict[str, Any]]) -> str:
    lines = ["| bytes/class | method | images | file or codec bytes/class | accuracy % | distil s | eval s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for point in sorted(points, key=lambda p: (p["bytes_per_class_budget"], label(p, points))):
        used = point.get("bytes_per_class") or 0
        lines.append(f"| {point['bytes_per_class_budget']:,} | {label(point, points)} | {point['images']} | {used:,.0f} | "
                     f"{point['mean']:.2f} +- {point['std']:.2f} | {point.get('distill_seconds', '-')} | "
                     f"{point['evaluation_seconds']} |")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against bytes per class (log axis), one line per method, drawn with Pillow."""
    width, height, margin = 720, 480, 60
    budgets = sorted({p["bytes_per_class_budget"] for p in points})
    accuracies = [p["mean"] for p in points]
    low_x, high_x = math.log(min(budgets) / 1.3), math.log(max(budgets) * 1.3)
    low_y, high_y = math.floor(min(accuracies) / 5) * 5, math.ceil(max(accuracies) / 5) * 5 + 1e-9

    def at(budget: float, accuracy: float) -> tuple[float, float]:
        x = margin + (math.log(budget) - low_x) / (high_x - low_x) * (width - 2 * margin)
        y = height - margin - (accuracy - low_y) / (high_y - low_y) * (height - 2 * margin)
        return x, y

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(0, 0, 0))
    for budget in budgets:
        x, _ = at(budget, low_y)
        draw.line([x, height - margin, x, height - margin + 5], fill=(0, 0, 0))
        draw.text((x - 15, height - margin + 8), f"{budget:,}", fill=(0, 0, 0))
    for tick in range(int(low_y), int(high_y) + 1, 5):
        _, y = at(budgets[0], tick)
        draw.line([margin - 5, y, margin, y], fill=(0, 0, 0))
        draw.text((margin - 30, y - 6), f"{tick}", fill=(0, 0, 0))
    draw.text((width / 2 - 90, height - 25), "bytes per class (log scale)", fill=(0, 0, 0))
    draw.text((8, 20), "test accuracy %, ConvNet", fill=(0, 0, 0))
    for row, name in enumerate(sorted({label(p, points) for p in points})):
        mine = sorted((p for p in points if label(p, points) == name), key=lambda p: p["bytes_per_class_budget"])
        colour = COLOURS.get(mine[0]["method"], (0, 0, 0))
        xy = [at(p["bytes_per_class_budget"], p["mean"]) for p in mine]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - margin - 150, margin + 8 + 14 * row), name, fill=colour)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", default="784,1568,3136,6272", help="Bytes per class, comma-separated.")
    parser.add_argument("--methods", default="dm,jpeg,webp,raw", help=f"Of {', '.join(DISTILLED + BASELINES)}.")
    parser.add_argument("--iterations", default="200", help="Distillation iterations (comma-separated: several).")
    parser.add_argument("--bits", help="Code bits of the distilled files (default: the library's; several allowed).")
    parser.add_argument("--k", help="Frequencies per class of the distilled files (default: the library's; several "
                        "allowed).")
    parser.add_argument("--lr", help="Distillation learning rate (default: the objective's; several allowed).")
    parser.add_argument("--mask-source", help="init (the reference's) or class: the frequencies ranked on the "
                        "initial instances or on the whole class (several allowed).")
    parser.add_argument("--buffer", help="Expert buffer for tm.")
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", type=int, default=0, metavar="PER_CLASS",
                        help="Evaluate on this many images per class held out of the training set (tuning).")
    parser.add_argument("--data-root", help="Where Fashion-MNIST lies.")
    parser.add_argument("--work", type=Path, help="Keep checkpoints and the distilled files here; longer runs "
                        "resume shorter ones.")
    parser.add_argument("--out", default="docs/results/bytes_bench.json")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(DISTILLED + BASELINES))
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}")

    train = load_dataset("fashion-mnist", split="train", root=args.data_root)
    if args.validation:
        train, test = hold_out(train, args.validation, seed=args.seed)
    else:
        test = load_dataset("fashion-mnist", split="test", root=args.data_root)
    out = Path(args.out)
    points = stored(out)
    runs = [(budget, method, setting) for budget in (int(b) for b in args.bytes.split(","))
            for method in methods for setting in variants(args, method)]
    for budget, method, setting in runs:
        if any(p["method"] == method and p["bytes_per_class_budget"] == budget and p["settings"] == setting
               for p in stored(out)):
            continue
        print(f"running {method} at {budget:,} bytes per class, {setting}", file=sys.stderr, flush=True)
        point = run_point(method, budget, train, test, args, setting)
        print(json.dumps({k: point[k] for k in ("method", "bytes_per_class_budget", "images", "mean", "std")}),
              file=sys.stderr, flush=True)
        points = [*stored(out), point]  # re-read: another bench process may have added points meanwhile
        write_json(out, {"benchmark": "bytes_bench", "test_set": test.source.get("split"),
                         "machine": machine("torch", "threads", "cpus", "cuda"), "points": points})
    print(table(points))
    if points:
        plot(points, out.with_suffix(".png"))
        print(f"plot: {out.with_suffix('.png')}")
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
