"""`fredset distill`: options built from fredset.distill's declarations, the run, the file written within budget."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from fredset import FredsetError, save_bytes
from fredset.data import load_dataset
from fredset.distill.budget import fit_within
from fredset.distill.config import DistillConfig
from fredset.distill.loop import distill as run_distillation
from fredset.distill.objectives import OBJECTIVES
from fredset.distributed import Context, init_from_environment, main_first
from fredset.evaluate import DEFAULT_LR as DEFAULT_EVAL_LR
from fredset.evaluate import evaluate as run_evaluation
from fredset.files import resolve_device, write_atomically
from fredset.format.writer import ENCODINGS
from fredset.progress import Progress

from .options import OBJECTIVE_FIELDS, RUN_FIELDS, data_options, dataset_option, device_option, distill_options
from .running import across_ranks, reports_errors


@click.command()
@dataset_option
@data_options
@distill_options
@device_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .fredset file to write.")
@click.option("--encoding", type=click.Choice(ENCODINGS),
              help="How coefficients are stored (default: q<bits> with --bits or a byte budget, else float32).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint file (default OUT.ckpt).")
@click.option("--checkpoint-every", default=100, show_default=True, type=click.IntRange(0),
              help="Save a checkpoint every N iterations (0: only at the end).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint if there is one.")
@click.option("--eval-every", default=0, show_default=True, type=click.IntRange(0),
              help="Evaluate every N iterations (recorded in the file; never used to select).")
@click.option("--eval-epochs", default=300, show_default=True, type=click.IntRange(1))
@click.option("--eval-runs", default=1, show_default=True, type=click.IntRange(1))
@reports_errors
@across_ranks
def distill(dataset: str, data_root: str | None, download: bool, device: str, out: str, encoding: str | None,
            checkpoint: str | None, checkpoint_every: int, resume: bool, eval_every: int, eval_epochs: int,
            eval_runs: int, **options: Any) -> None:
    """Distil a dataset into a .fredset file.

    \b
    Examples:
      fredset distill --dataset fashion-mnist --ipc 1 --out fmnist-dm-ipc1.fredset
      fredset distill --dataset fashion-mnist --ipc 1 --iterations 20000 --out full.fredset --resume
      fredset distill --dataset fashion-mnist --bytes-per-class 3136 --out small.fredset
      fredset buffer --dataset fashion-mnist --experts 10 --epochs 8 --out experts/
      fredset distill --dataset fashion-mnist --objective tm --buffer experts/ --out fmnist-tm-ipc1.fredset
      torchrun --nproc-per-node 4 -m fredset_cli distill --dataset cifar10 --ipc 10 --out c10.fredset

    Under torchrun each process optimises its share of the classes (DM, DC) or takes its share of every
    unrolled step's batch (TM); rank 0 writes the file.
    """
    device = resolve_device(device)
    if options["objective"] in OBJECTIVES:  # before joining the others: an objective may not be sharded
        OBJECTIVES[options["objective"]].check_distributed(Context.from_environment())
    context = init_from_environment(device)  # one process: no process group, the device unchanged
    device = context.device
    checkpoint = checkpoint or f"{out}.ckpt"
    for option, path in (("--out", out), ("--checkpoint", checkpoint)):  # fail now, not after hours of work
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise FredsetError(f"{option} {path}: folder {folder} does not exist or is not writable")
    with main_first(context) if download else contextlib.nullcontext():  # rank 0 downloads, alone
        real = load_dataset(dataset, split="train", root=data_root, download=download)
    objective_options = {name: options[name] for name in OBJECTIVE_FIELDS if options[name] is not None}
    config = DistillConfig(dataset=real.name, **{name: options[name] for name in RUN_FIELDS},
                           options=objective_options)
    run = config.resolve(real, device)  # every option checked, once, before anything starts
    with main_first(context) if download and eval_every else contextlib.nullcontext():
        test = load_dataset(dataset, split="test", root=data_root, download=download) if eval_every else None

    def evaluate_synset(synset: Any, iteration: int, lr: float | None = None) -> dict[str, Any]:
        return run_evaluation(synset.decode().detach(), synset.labels, test, runs=eval_runs, epochs=eval_epochs,
                              seed=run.config.seed, lr=lr or DEFAULT_EVAL_LR, context=context)

    with Progress(run.config.iterations, unit="it", label="distilling") as progress:
        def on_iteration(iteration: int, loss: float) -> None:
            if progress.done == 0 and iteration > 1:  # resumed from a checkpoint
                progress.resume_at(iteration - 1)
            progress.update(iteration - progress.done, note=f"loss {loss:.4g}")

        try:
            artifact = run_distillation(run, real, device=device, checkpoint=checkpoint,
                                        checkpoint_every=checkpoint_every, resume=resume, on_iteration=on_iteration,
                                        evaluate_every=eval_every, evaluate=evaluate_synset if eval_every else None,
                                        context=context)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted; the last checkpoint is {checkpoint}: run the same command with --resume "
                       "to continue", err=True)
            sys.exit(130)
    if not context.is_main:  # rank 0 writes the file
        return
    budget = run.config.byte_budget(real.num_classes)
    if encoding is not None and run.config.bits is not None and encoding != f"q{run.config.bits}":
        raise FredsetError(f"--encoding {encoding} would re-quantise {run.config.bits}-bit codes; "
                           f"use q{run.config.bits} or leave --encoding out")
    if budget is None:
        data = save_bytes(artifact, encoding=encoding)
    else:  # the loop fitted the artifact already; this settles a byte the write time may add to the metadata
        artifact, data = fit_within(artifact, budget, encoding=encoding)
    write_atomically(out, data)
    grid = f", {run.config.bits}-bit codes" if run.config.bits is not None else ""
    within = f" (budget {budget:,})" if budget is not None else ""
    click.echo(f"wrote {out}: {artifact.num_instances} images ({artifact.counts[0]} per class, k {artifact.k}"
               f"{grid}), {len(data):,} bytes{within}; checkpoint {checkpoint}")
