"""Load time of this checkout's reader against another checkout's, side by side (A B A B), with torch.load.

    git worktree add /tmp/base <revision>
    python bench/load_ab.py --baseline /tmp/base [--rounds 15] [--out bench/out/load_ab.json]

Each round loads the same float32 .fredset file with FredDataset in a fresh process, once with the baseline's
fredset and once with this checkout's, then torch.load of the decoded tensor; "warm" is the median of 15 loads
in one process. Ratios of medians are what to read (the machine is shared; absolute times drift).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fredset  # noqa: E402
from artifacts import cifar10_shaped_artifact, fashion_mnist_artifact  # noqa: E402
from common import machine, write_json  # noqa: E402

LOAD = """
import sys, time, torch
sys.path.insert(0, sys.argv[1]); import fredset
assert fredset.__file__.startswith(sys.argv[1]), fredset.__file__
kind, path, warm = sys.argv[2], sys.argv[3], sys.argv[4] == "warm"
def once():
    return fredset.FredDataset(path).images if kind == "fredset" else torch.load(path)
once() if warm else None
times = []
for _ in range(15 if warm else 1):
    start = time.perf_counter(); once(); times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2])
"""


def seconds(source: Path, kind: str, path: Path, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", LOAD, str(source), kind, str(path), mode],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="Another checkout of fredset (its root).")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "load_ab.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    rows = []
    print(f"{'artifact':<16}{'mode':<7}{'baseline':>10}{'this':>9}{'torch':>9}{'this/base':>11}{'this/torch':>12}"
          f"{'base/torch':>12}   (ms, medians)")
    for name, artifact in (("cifar10-shaped", cifar10_shaped_artifact(160)),
                           ("fmnist-shaped", fashion_mnist_artifact(122))):
        path, tensor = folder / f"{name}.fredset", folder / f"{name}.pt"
        fredset.save(artifact, path)
        torch.save(artifact.decode(), tensor)
        for mode, rounds in (("fresh", args.rounds), ("warm", max(1, args.rounds // 3))):
            times: dict[str, list[float]] = {"baseline": [], "this": [], "torch": []}
            for _ in range(rounds):
                times["baseline"].append(seconds(args.baseline.resolve(), "fredset", path, mode))
                times["this"].append(seconds(ROOT, "fredset", path, mode))
                times["torch"].append(seconds(ROOT, "torch", tensor, mode))
            med = {key: statistics.median(values) for key, values in times.items()}
            row = {"artifact": name, "mode": mode, "rounds": rounds, **{f"{k}_s": v for k, v in med.items()},
                   "this_over_baseline": med["this"] / med["baseline"], "this_over_torch": med["this"] / med["torch"],
                   "baseline_over_torch": med["baseline"] / med["torch"]}
            rows.append(row)
            print(f"{name:<16}{mode:<7}{med['baseline'] * 1e3:>10.2f}{med['this'] * 1e3:>9.2f}"
                  f"{med['torch'] * 1e3:>9.2f}{row['this_over_baseline']:>11.3f}{row['this_over_torch']:>12.2f}"
                  f"{row['baseline_over_torch']:>12.2f}", flush=True)
    write_json(args.out, {"baseline": str(args.baseline), "rows": rows,
                          **machine("torch", "fredset", "python", "machine", "cpus", "threads")})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
