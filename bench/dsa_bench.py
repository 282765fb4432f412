"""DSA benchmark: fredset's DSA against kornia's nearest equivalent augmentations (CPU).

    pip install kornia
    python bench/dsa_bench.py [--repeats 21] [--threads 1] [--out bench/out/dsa_bench.json]

For each image shape (256 x 3 x 32 x 32 and 256 x 1 x 28 x 28) and each DSA family, times one
forward + backward (sampling the random values, augmenting, ``out.sum().backward()``) of:

- ours: ``DSA(family)(x, generator=g)`` (independent per sample) or, for the siamese rows,
  ``DSA(family)(x, generator=g, siamese=True)`` (one value set for the whole batch);
- kornia: the closest ``kornia.augmentation`` module, with ``same_on_batch=True`` for siamese:
    color  -> ColorJiggle(brightness=0.5, contrast=0.5, saturation=1.0 (0 on 1 channel, which kornia
              needs and where DSA's saturation does nothing))  (additive brightness in
              [-0.5, 0.5], contrast and saturation factors in [0.5, 1.5] and [0, 2] like DSA; but
              kornia clamps input and output to [0, 1], its contrast does not subtract the mean and its
              saturation goes through HSV: not the same operation on normalised images)
    crop   -> RandomCrop(size, padding=int(0.125 * size + 0.5))  (integer shift, zero fill: the same)
    cutout -> RandomErasing(scale=(side^2/HW,)*2, ratio=(1, 1), value=0, p=1)  (kornia keeps the square
              inside the image; DSA lets it be clipped at the borders)
    flip   -> RandomHorizontalFlip(p=0.5)  (the same)
    scale  -> RandomAffine(degrees=0, scale=(1/1.2, 1.2, 1/1.2, 1.2))  (independent x/y scale)
    rotate -> RandomRotation(degrees=15)
  and for the whole strategy (one family per call): AugmentationSequential(all six, random_apply=1).

Medians over --repeats, ours and kornia alternating in the same run; ratio = kornia / ours (> 1 means
ours is faster). The "strategy" row times the one-family-per-call strategy itself (both sides pick a
family at random per call, so its median is noisier than the per-family rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fredset.augment import FAMILIES, STRATEGY, DSA  # noqa: E402

from common import machine, write_json  # noqa: E402

SHAPES = [(256, 3, 32, 32), (256, 1, 28, 28)]


def kornia_module(family: str, shape: tuple[int, int, int, int], same_on_batch: bool):
    import kornia.augmentation as K

    _, channels, height, width = shape
    common = dict(same_on_batch=same_on_batch)
    if family == "color":  # kornia's saturation needs 3 channels; on 1 it is a no-op in DSA anyway
        saturation = 1.0 if channels == 3 else 0.0
        return K.ColorJiggle(brightness=0.5, contrast=0.5, saturation=saturation, hue=0.0, p=1.0, **common)
    if family == "crop":
        pad = int(0.125 * height + 0.5)
        return K.RandomCrop((height, width), padding=pad, p=1.0, **common)
    if family == "cutout":
        side = int(0.5 * height + 0.5)
        area = side * side / (height * width)
        return K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=1.0, **common)
    if family == "flip":
        return K.RandomHorizontalFlip(p=0.5, **common)
    if family == "scale":
        return K.RandomAffine(degrees=0.0, scale=(1 / 1.2, 1.2, 1 / 1.2, 1.2), p=1.0, **common)
    if family == "rotate":
        return K.RandomRotation(degrees=15.0, p=1.0, **common)
    if family == "strategy":
        return K.AugmentationSequential(*(kornia_module(f, shape, same_on_batch) for f in FAMILIES),
                                        random_apply=1)
    raise ValueError(family)


def time_once(fn, base: torch.Tensor) -> float:
    x = base.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    out = fn(x)
    out.sum().backward()
    return time.perf_counter() - start


def bench_pair(ours, theirs, base: torch.Tensor, repeats: int,
               warmup: int = 3) -> tuple[float, float | None, str]:
    note = ""
    for _ in range(warmup):
        time_once(ours, base)
    try:
        for _ in range(warmup):
            time_once(theirs, base)
    except Exception as error:  # noqa: BLE001 - reported in the table
        theirs = None
        note = f"kornia fails: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(time_once(ours, base))
        if theirs is not None:
            try:
                t_theirs.append(time_once(theirs, base))
            except Exception as error:  # noqa: BLE001 - reported in the table
                theirs, t_theirs = None, []
                note = f"kornia fails: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    return statistics.median(t_ours), (statistics.median(t_theirs) if t_theirs else None), note


def siamese_reuse_check() -> dict:
    """Can one kornia parameter set (same_on_batch) be applied to a second batch of another size?"""
    import kornia.augmentation as K

    big, small = torch.rand(7, 3, 32, 32), torch.rand(3, 3, 32, 32)
    result = {}
    for family in FAMILIES:
        module = kornia_module(family, (7, 3, 32, 32), same_on_batch=True)
        module(big)
        try:
            module(small, params=module._params)
            result[family] = "ok"
        except Exception as error:  # noqa: BLE001
            result[family] = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "dsa_bench.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # kornia draws from the global RNG (it takes no generator)
    rows = []
    for shape in SHAPES:
        base = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        for siamese in (False, True):
            for family in (*FAMILIES, "strategy"):
                dsa = DSA(STRATEGY if family == "strategy" else family)
                generator = torch.Generator().manual_seed(1)

                def ours(x, dsa=dsa, generator=generator, siamese=siamese):
                    return dsa(x, generator=generator, siamese=siamese)

                module = kornia_module(family, shape, same_on_batch=siamese)
                ours_s, theirs_s, note = bench_pair(ours, module, base, args.repeats)
                rows.append(dict(shape="x".join(map(str, shape)), mode="siamese" if siamese else "per-sample",
                                 family=family, ours_ms=ours_s * 1e3,
                                 kornia_ms=None if theirs_s is None else theirs_s * 1e3,
                                 ratio=None if theirs_s is None else theirs_s / ours_s, note=note))
                r = rows[-1]
                kornia_text = "-" if r["kornia_ms"] is None else f"{r['kornia_ms']:9.2f}"
                ratio_text = "-" if r["ratio"] is None else f"{r['ratio']:6.2f}"
                print(f"{r['shape']:>13} {r['mode']:>10} {family:>8} {r['ours_ms']:9.2f} {kornia_text:>9} "
                      f"{ratio_text:>6} {note}", flush=True)

    reuse = siamese_reuse_check()
    report = dict(
        benchmark="dsa_bench", **machine("torch", "kornia", "python", "machine", "threads"),  # threads: --threads
        repeats=args.repeats, measure="median seconds of sample+augment+sum().backward(), x1e3 = ms",
        rows=rows, kornia_params_reuse_other_batch_size=reuse,
    )
    write_json(args.out, report)

    print()
    print("| shape | mode | family | ours ms | kornia ms | kornia/ours |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        kornia_text = "fails" if r["kornia_ms"] is None else f"{r['kornia_ms']:.2f}"
        ratio_text = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"| {r['shape']} | {r['mode']} | {r['family']} | {r['ours_ms']:.2f} | {kornia_text} | {ratio_text} |")
    print()
    print("kornia: reusing one same_on_batch parameter set (module._params) on a batch of another size:")
    for family, outcome in reuse.items():
        print(f"  {family:>7}: {outcome}")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
