"""Format benchmark: file size, load+decode time, decode throughput, encodings' bytes and PSNR.

    python bench/format_bench.py [--repeats 11] [--out bench/out/format_bench.json]

Artifacts (see bench/artifacts.py): CIFAR-10-shaped (10 classes x 160 instances, 3x32x32, k 64:
FreD's ipc-10 budget) and Fashion-MNIST-shaped (10 x 122 real images, 1x28x28, k 64: ipc 10).
Baselines, as the reference implementation ships data: torch.save of the decoded float32 images
(images_best.pt), and that plus its dense float32 mask of the same size (mask.pt).

Load time is measured three ways, each alternating FredDataset and torch.load in the same run:
- fresh: one load in a new process (imports done first), the way a training run loads its data
  once; median over --repeats processes each.
- fresh, file not cached: the same, with the data file (only) dropped from the page cache first
  (posix_fadvise DONTNEED), as when a job starts on data it has not read recently.
- warm: the same process loading again and again (the allocator reuses freed memory, so
  torch.load becomes a memcpy); median over 5 x --repeats loads each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from artifacts import cifar10_shaped_artifact, fashion_mnist_artifact  # noqa: E402
from common import machine, write_json  # noqa: E402

import fredset  # noqa: E402
from fredset import FredDataset  # noqa: E402
from fredset.format import to_bytes  # noqa: E402

FRESH_LOAD = """
import os, sys, time, torch, fredset
kind, path, cold = sys.argv[1], sys.argv[2], sys.argv[3] == "cold"
if cold:  # drop this file (only) from the page cache: the data was not read recently
    descriptor = os.open(path, os.O_RDONLY)
    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(descriptor)
start = time.perf_counter()
if kind == "fredset":
    images = fredset.FredDataset(path).images
else:
    images = torch.load(path)
print(time.perf_counter() - start, float(images[0, 0, 0, 0]))
"""


def fresh_seconds(kind: str, path: Path, cold: bool = False) -> float:
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, kind, str(path), "cold" if cold else "cached"],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def warm_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR in pixel space (peak 1.0)."""
    mse = float((reference.double() - other.double()).square().mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def measure(name: str, artifact: fredset.Artifact, folder: Path, repeats: int) -> dict:
    images = artifact.decode()
    tensor_file = folder / f"{name}.pt"
    torch.save(images, tensor_file)
    torch_bytes = tensor_file.stat().st_size
    mask_file = folder / f"{name}-mask.pt"
    dense_mask = torch.zeros_like(images)
    start = 0
    for count, mask in zip(artifact.counts, artifact.masks):
        dense_mask[start:start + count].flatten(-2)[..., mask] = 1
        start += count
    torch.save(dense_mask, mask_file)
    reference_bytes = torch_bytes + mask_file.stat().st_size

    row = {"artifact": name, "classes": artifact.num_classes, "instances": artifact.num_instances,
           "shape": [artifact.channels, *artifact.image_size], "k": artifact.k,
           "torch_save_bytes": torch_bytes, "torch_save_with_mask_bytes": reference_bytes, "encodings": {}}
    reference_pixels = artifact.decode(pixel_space=True)
    for encoding in ("float32", "float16", "int8"):
        data = to_bytes(artifact, encoding=encoding)
        path = folder / f"{name}-{encoding}.fredset"
        path.write_bytes(data)
        decoded = fredset.load(path).decode(pixel_space=True)
        row["encodings"][encoding] = {
            "file_bytes": len(data), "ratio_vs_torch_save": round(torch_bytes / len(data), 2),
            "ratio_vs_torch_save_with_mask": round(reference_bytes / len(data), 2),
            "psnr_db_vs_float32": round(psnr(reference_pixels, decoded), 2),
        }

    path = folder / f"{name}-float32.fredset"
    fresh_fred, fresh_torch, cold_fred, cold_torch = [], [], [], []
    cold = hasattr(os, "posix_fadvise")
    for _ in range(repeats):  # alternate, so drifts in machine speed hit both alike
        fresh_fred.append(fresh_seconds("fredset", path))
        fresh_torch.append(fresh_seconds("torch", tensor_file))
        if cold:
            cold_fred.append(fresh_seconds("fredset", path, cold=True))
            cold_torch.append(fresh_seconds("torch", tensor_file, cold=True))
    warm_fred = warm_seconds(lambda: FredDataset(path), 5 * repeats)
    warm_torch = warm_seconds(lambda: torch.load(tensor_file), 5 * repeats)
    row["load"] = {
        "fresh_fredset_s": statistics.median(fresh_fred), "fresh_torch_load_s": statistics.median(fresh_torch),
        "fresh_ratio": statistics.median(fresh_fred) / statistics.median(fresh_torch),
        "warm_fredset_s": warm_fred, "warm_torch_load_s": warm_torch, "warm_ratio": warm_fred / warm_torch,
    }
    if cold:
        row["load"].update(cold_fredset_s=statistics.median(cold_fred), cold_torch_load_s=statistics.median(cold_torch),
                           cold_ratio=statistics.median(cold_fred) / statistics.median(cold_torch))
    decode_cpu = warm_seconds(lambda: artifact.decode(), 5 * repeats)
    row["decode_images_per_s"] = {"cpu": artifact.num_instances / decode_cpu}
    if torch.cuda.is_available():
        gpu_artifact = fredset.load(path)

        def gpu_decode():
            gpu_artifact.decode("cuda")
            torch.cuda.synchronize()

        row["decode_images_per_s"]["cuda"] = artifact.num_instances / warm_seconds(gpu_decode, 5 * repeats)
        row["load"]["warm_fredset_cuda_s"] = warm_seconds(
            lambda: (FredDataset(path, device="cuda"), torch.cuda.synchronize()), 5 * repeats)
    return row


def print_table(rows: list[dict]) -> None:
    print("\nFile size (bytes; ratio = torch.save of decoded float32 images / file; +mask = reference's images+mask)")
    print(f"{'artifact':<16}{'encoding':<9}{'bytes':>11}{'ratio':>8}{'+mask':>8}{'PSNR dB':>9}")
    for row in rows:
        print(f"{row['artifact']:<16}{'torch.save':<9}{row['torch_save_bytes']:>11,}{'1.0':>8}{'':>8}{'':>9}")
        for encoding, facts in row["encodings"].items():
            print(f"{'':<16}{encoding:<9}{facts['file_bytes']:>11,}{facts['ratio_vs_torch_save']:>8.1f}"
                  f"{facts['ratio_vs_torch_save_with_mask']:>8.1f}{facts['psnr_db_vs_float32']:>9.1f}")
    print("\nLoad + decode on CPU (ms; FredDataset of the float32 file vs torch.load of the decoded tensor)")
    print(f"{'':<16}{'--- fresh process ---':>26}{'--- fresh, file not cached ---':>32}"
          f"{'--- warm, same process ---':>28}")
    print(f"{'artifact':<16}{'fred':>10}{'torch':>9}{'ratio':>7}{'fred':>14}{'torch':>9}{'ratio':>9}"
          f"{'fred':>12}{'torch':>9}{'ratio':>7}{'decode img/s':>14}")
    for row in rows:
        load = row["load"]
        cold = (f"{load['cold_fredset_s'] * 1e3:>14.2f}{load['cold_torch_load_s'] * 1e3:>9.2f}"
                f"{load['cold_ratio']:>9.2f}" if "cold_ratio" in load else f"{'n/a':>32}")
        print(f"{row['artifact']:<16}{load['fresh_fredset_s'] * 1e3:>10.2f}{load['fresh_torch_load_s'] * 1e3:>9.2f}"
              f"{load['fresh_ratio']:>7.2f}{cold}{load['warm_fredset_s'] * 1e3:>12.2f}"
              f"{load['warm_torch_load_s'] * 1e3:>9.2f}{load['warm_ratio']:>7.2f}"
              f"{row['decode_images_per_s']['cpu']:>14,.0f}")
        if "cuda" in row["decode_images_per_s"]:
            print(f"{'':<16}cuda: decode {row['decode_images_per_s']['cuda']:,.0f} img/s, FredDataset open+decode "
                  f"{load['warm_fredset_cuda_s'] * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "format_bench.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, build in (("cifar10-shaped", lambda: cifar10_shaped_artifact(160)),
                            ("fmnist-shaped", lambda: fashion_mnist_artifact(122))):
            rows.append(measure(name, build(), Path(folder), args.repeats))
    print_table(rows)
    result = {"rows": rows, "repeats": args.repeats,
              **machine("torch", "fredset", "python", "machine", "cpus", "threads", "cuda")}
    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
