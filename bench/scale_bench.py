"""Scaling over processes (torchrun): seconds per iteration of DM and TM with 1 process x 2 threads against 2
processes x 1 thread on this 2-core machine, and TM's peak memory per rank at 1 and 2 ranks with the same full
batch (the figure that must fall about linearly).

    python bench/scale_bench.py --data-root ../shared/data        # CPU (gloo); nothing else may run (~15 min)
    python bench/scale_bench.py --device cuda --data-root ...     # CUDA (nccl): 2 processes need 2 devices

Every configuration runs in fresh processes (``python bench/scale_bench.py --worker ...`` alone, or under
``python -m torch.distributed.run --standalone --nproc-per-node 2``), alternated A B A B (``--rounds``): a warm-up
iteration, then ``--iterations`` timed ones. The time is rank 0's wall time per iteration (the ranks meet in a
collective every iteration, so it is the job's). Memory per rank: on CPU the largest resident set during the
iterations minus the resident set just before the first one, sampled every 2 ms from /proc/self/statm (the
unrolled graph and the iteration's transients, not the data or the libraries); on CUDA
torch.cuda.max_memory_allocated minus what was allocated before the first iteration.

Settings. DM: Fashion-MNIST ipc 10 at its default k 49 (1,600 synthetic images, 256 real images per class,
DSA, the default precision). TM: Fashion-MNIST ipc 1, k 64 (120 images), syn_steps 10, full batch, DSA (the
tm_bench target setting), and the same on CIFAR-10-shaped synthetic data (160 images; there is no CIFAR here);
the TM buffer is small and real (2 experts x 7 epochs on 2,048 images: the unroll's cost does not depend on how
good the experts are), kept in bench/out/scale_buffer-* for reruns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402
from tm_bench import small_buffer, synthetic_cifar  # noqa: E402

from fredset.augment import DSA  # noqa: E402
from fredset.data import load_dataset  # noqa: E402
from fredset.distill.objectives import DistributionMatching, TrajectoryMatching  # noqa: E402
from fredset.distill.synset import default_k, init_frequency_synset  # noqa: E402
from fredset.distributed import gather_objects, init_from_environment, shutdown  # noqa: E402
from fredset.experts import ExpertBuffer  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "results" / "scale_bench.json"
MACHINE = ("torch", "threads", "cpus", "machine", "cuda")
CONFIGURATIONS = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
WORKLOADS = {  # name: (objective, data, description)
    "dm": ("dm", "fashion-mnist", "DM Fashion-MNIST ipc 10, k 49 (1,600 images), DSA"),
    "tm": ("tm", "fashion-mnist", "TM Fashion-MNIST ipc 1, k 64 (120 images), syn_steps 10, full batch, DSA"),
    "tm-cifar": ("tm", "cifar10-shaped", "TM CIFAR-10-shaped ipc 1, k 64 (160 images), syn_steps 10, full batch, DSA"),
}
TM_SYN_STEPS = 10


class PeakResidentSet:
    """The largest resident set of this process while running, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __enter__(self) -> PeakResidentSet:
        self.before = self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def data(name: str, root: str | None):
    return load_dataset("fashion-mnist", root=root) if name == "fashion-mnist" else synthetic_cifar()


def setup(workload: str, train, buffer: str | None, device: torch.device):
    objective_name = WORKLOADS[workload][0]
    generator = torch.Generator().manual_seed(0)
    if objective_name == "dm":
        synset = init_frequency_synset(train, 10, default_k(*train.image_size), generator=generator, device=device)
        objective = DistributionMatching(train, dsa=DSA(), device=device,
                                         autocast=DistributionMatching.default_autocast(device))
        optimizer = torch.optim.SGD(synset.parameters(), lr=DistributionMatching.default_lr["freq"], momentum=0.5)
    else:
        synset = init_frequency_synset(train, 1, 64, generator=generator, device=device)
        objective = TrajectoryMatching(ExpertBuffer(buffer), syn_steps=TM_SYN_STEPS, max_start_epoch=5, lr_lr=1e-7,
                                       lr_teacher=0.01, dsa=DSA(align_corners=True), device=device)
        optimizer = torch.optim.SGD(synset.parameters(), lr=TrajectoryMatching.default_lr["freq"], momentum=0.5)
    return synset, optimizer, objective, generator


def worker(args: argparse.Namespace) -> None:
    """One rank (or the only process) of one configuration: time the iterations, measure memory, and let rank 0
    write what every rank saw."""
    torch.set_num_threads(args.threads)
    context = init_from_environment(args.device)
    train = data(WORKLOADS[args.workload][1], args.data_root)
    synset, optimizer, objective, generator = setup(args.workload, train, args.buffer, context.device)
    if context.distributed:
        objective.distribute(context)
    cuda = context.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    seconds = []
    with PeakResidentSet() as resident:
        for _ in range(1 + args.iterations):
            started = time.perf_counter()
            objective.iteration(synset, optimizer, generator)
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
    memory = (torch.cuda.max_memory_allocated() - allocated_before if cuda else resident.peak - resident.before)
    mine = {"rank": context.rank, "memory_gib": memory / 2**30, "resident_peak_gib": resident.peak / 2**30,
            "seconds": seconds[1:], "warm_up_seconds": seconds[0], "images": int(synset.labels.numel())}
    everyone = gather_objects(mine, context)
    if context.is_main:
        Path(args.worker_out).write_text(json.dumps(everyone))
    shutdown()


def launch(workload: str, processes: int, threads: int, args: argparse.Namespace, buffer: str | None) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ranks.json"
        command = [__file__, "--worker", "--workload", workload, "--threads", str(threads), "--device", args.device,
                   "--iterations", str(args.iterations), "--worker-out", str(out)]
        command += ["--buffer", buffer] if buffer else []
        command += ["--data-root", args.data_root] if args.data_root else []
        if processes == 1:
            command = [sys.executable, *command]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                       str(processes), *command]
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        finished = subprocess.run(command, env=environment)
        if finished.returncode != 0:
            raise SystemExit(f"{workload} with {processes} process(es) failed (exit {finished.returncode})")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="dm,tm,tm-cifar", help=f"Of {', '.join(WORKLOADS)}.")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per workload.")
    parser.add_argument("--iterations", type=int, default=3, help="Timed iterations per run (after one warm-up).")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--buffer", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    configurations = dict(CONFIGURATIONS)
    if args.device == "cuda":
        configurations = {"1 process": (1, 1)}
        if torch.cuda.device_count() >= 2:
            configurations["2 processes (one device each)"] = (2, 1)
    results = []
    for workload in args.workloads.split(","):
        buffer = None
        if WORKLOADS[workload][0] == "tm":
            buffer = HERE / "out" / f"scale_buffer-{WORKLOADS[workload][1]}"
            if not (buffer / "expert_00001.h5").exists():
                small_buffer(data(WORKLOADS[workload][1], args.data_root), buffer)
            buffer = str(buffer)
        runs: dict[str, list[list[dict]]] = {name: [] for name in configurations}
        for round_ in range(args.rounds):
            for name, (processes, threads) in configurations.items():
                print(f"{workload}: {name}, round {round_ + 1}", file=sys.stderr, flush=True)
                runs[name].append(launch(workload, processes, threads, args, buffer))
        for name, rounds in runs.items():
            seconds = [s for ranks in rounds for s in ranks[0]["seconds"]]
            memory = [max(rank["memory_gib"] for rank in ranks) for ranks in rounds]
            results.append({"workload": workload, "setting": WORKLOADS[workload][2], "configuration": name,
                            "processes": configurations[name][0], "threads": configurations[name][1],
                            "images": rounds[0][0]["images"],
                            "seconds_per_iteration": round(statistics.median(seconds), 3),
                            "seconds": [round(s, 3) for s in seconds],
                            "memory_per_rank_gib": round(max(memory), 3),
                            "ranks": rounds})
    baseline = {}
    print(f"\n{'workload':<10}{'configuration':<32}{'s/iter':>8}{'x 1 proc':>9}{'mem/rank GiB':>14}{'x 1 proc':>9}")
    for result in results:
        first = baseline.setdefault(result["workload"], result)
        result["time_ratio"] = round(result["seconds_per_iteration"] / first["seconds_per_iteration"], 3)
        result["memory_ratio"] = round(result["memory_per_rank_gib"] / first["memory_per_rank_gib"], 3)
        print(f"{result['workload']:<10}{result['configuration']:<32}{result['seconds_per_iteration']:>8.2f}"
              f"{result['time_ratio']:>9.2f}{result['memory_per_rank_gib']:>14.2f}{result['memory_ratio']:>9.2f}")
    write_json(args.out, {"benchmark": "scale_bench", "device": args.device, "rounds": args.rounds,
                          "iterations": args.iterations, "tm_syn_steps": TM_SYN_STEPS, "results": results,
                          "machine": machine(*MACHINE)})


if __name__ == "__main__":
    main()
