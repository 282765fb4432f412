"""DM benchmark (Fashion-MNIST, ipc 1, k 64): FreD against the pixel parameterisation at equal budget.

    python bench/dm_bench.py [--iterations 500] [--epochs 500] [--nets 3] [--out bench/out/dm_bench.json]

Runs, each in its own process (so peak memory is its own), all with seed 0, 256 real images per
class, siamese DSA, ConvNetD3:
  freq-bf16   FreD (k 64 -> 12 instances per class), lr 1e6 (reference scale), real pass in bfloat16
  freq-fp32   the same in float32 (does bf16 cost accuracy?)
  pixel-bf16  1 real image per class optimised in pixel space, lr 1 (the same storage budget)
Each is evaluated after the last iteration with --nets fresh ConvNets x --epochs epochs (final
epoch, no selection); the FreD runs are also evaluated at iteration 200 with 3 x 300 epochs, the
reference implementation's measured setting (75.1 / 73.8 / 73.7 %, mean 74.2).
Seconds per iteration come from a separate timing phase (--timing-iterations, nothing else
running) that alternates the configurations, so all are measured under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402
from timing import alternate_iterations  # noqa: E402

RUNS = {
    "freq-bf16": dict(parameterization="freq", k=64, precision="bf16"),
    "freq-fp32": dict(parameterization="freq", k=64, precision="fp32"),
    "pixel-bf16": dict(parameterization="pixel", precision="bf16"),
}
REFERENCE = {"iteration": 200, "epochs": 300, "nets": 3, "accuracies": [75.1, 73.8, 73.7], "mean": 74.2,
             "seconds_per_iteration": 2.35}


def one_run(name: str, iterations: int, epochs: int, nets: int, out: Path) -> None:
    from fredset.data import load_dataset
    from fredset.distill.loop import DistillConfig, distill
    from fredset.evaluate import evaluate
    from fredset.format import save

    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
    config = DistillConfig(dataset="fashion-mnist", ipc=1, iterations=iterations, seed=0, **RUNS[name])
    points = {iterations: (nets, epochs)}
    if RUNS[name]["parameterization"] == "freq" and iterations >= REFERENCE["iteration"]:
        points.setdefault(REFERENCE["iteration"], (REFERENCE["nets"], REFERENCE["epochs"]))

    def evaluate_at(synset, iteration, lr=None):
        if iteration not in points:
            return None
        runs, run_epochs = points[iteration]
        images = synset.decode().detach()
        return evaluate(images, synset.labels, test, runs=runs, epochs=run_epochs, seed=0)

    started = time.perf_counter()
    artifact = distill(config, train, evaluate_every=1, evaluate=evaluate_at)
    seconds = time.perf_counter() - started
    save(artifact, out.with_suffix(".fredset"))
    result = {"name": name, "config": RUNS[name], "iterations": iterations, "wall_seconds": round(seconds, 1),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "final_loss": artifact.provenance["final_loss"], "evaluations": artifact.provenance.get("evaluation", [])}
    write_json(out, result)


def timing(iterations: int) -> dict[str, float]:
    """Median seconds per iteration of each configuration, measured alternately in one process."""
    from fredset.data import load_dataset
    from fredset.augment import DSA
    from fredset.distill.objectives import DistributionMatching
    from fredset.distill.synset import init_frequency_synset, init_pixel_synset

    train = load_dataset("fashion-mnist")
    setups = {}
    for name, options in RUNS.items():
        generator = torch.Generator().manual_seed(0)
        synset = (init_frequency_synset(train, 1, 64, generator=generator) if options["parameterization"] == "freq"
                  else init_pixel_synset(train, 1, generator=generator))
        lr = 1e6 if options["parameterization"] == "freq" else 1.0
        objective = DistributionMatching(train, dsa=DSA(), batch_real=256, autocast=options["precision"] == "bf16")
        setups[name] = (synset, torch.optim.SGD(synset.parameters(), lr=lr, momentum=0.5), objective, generator)
    times = alternate_iterations(setups, iterations)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--timing-iterations", type=int, default=10)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "dm_bench.json")
    parser.add_argument("--timing-only", action="store_true", help="only the timing phase; print and exit")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--run-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        one_run(args.run, args.iterations, args.epochs, args.nets, args.run_out)
        return

    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"timing {args.timing_iterations} iterations of each configuration ...", flush=True)
    seconds = timing(args.timing_iterations)
    if args.timing_only:
        for name, value in seconds.items():
            print(f"{name:<12}{value:.3f} s/iteration  ({value / REFERENCE['seconds_per_iteration']:.2f} x the "
                  f"reference's {REFERENCE['seconds_per_iteration']} s)")
        write_json(args.out.with_name("dm_bench-timing.json"), seconds)
        return
    results = []
    for name in args.runs.split(","):
        print(f"running {name}: {args.iterations} iterations, then {args.nets} x {args.epochs} epochs ...", flush=True)
        run_out = args.out.with_name(f"dm_bench-{name}.json")
        subprocess.run([sys.executable, __file__, "--run", name, "--run-out", str(run_out),
                        "--iterations", str(args.iterations), "--epochs", str(args.epochs), "--nets", str(args.nets)],
                       check=True)
        result = json.loads(run_out.read_text())
        result["seconds_per_iteration"] = round(seconds[name], 3)
        results.append(result)

    print(f"\nFashion-MNIST, DM, ipc 1 (784 floats per class), seed 0, {args.iterations} iterations")
    print(f"{'run':<12}{'s/iter':>8}{'x ref':>7}{'peak MiB':>10}  accuracy % (mean +- std over nets) at iteration")
    for result in results:
        evaluations = "; ".join(
            f"{e['iteration']}: {e['results']['convnet']['mean']:.2f} +- {e['results']['convnet']['std']:.2f} "
            f"({e['protocol']['runs']}x{e['protocol']['epochs']} ep)" for e in result["evaluations"])
        print(f"{result['name']:<12}{result['seconds_per_iteration']:>8.3f}"
              f"{result['seconds_per_iteration'] / REFERENCE['seconds_per_iteration']:>7.2f}"
              f"{result['peak_rss_mib']:>10.0f}  {evaluations}")
    print(f"{'reference':<12}{REFERENCE['seconds_per_iteration']:>8.2f}{1.0:>7.2f}{'':>10}  "
          f"200: {REFERENCE['mean']} ({', '.join(map(str, REFERENCE['accuracies']))}; 3x300 ep)")
    summary = {"results": results, "reference": REFERENCE, **machine("torch", "threads", "cpus", "machine"),
               "settings": vars(args) | {"out": str(args.out)}}
    write_json(args.out, summary)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
