"""`fredset buffer`: train the expert trajectories TM matches."""

from __future__ import annotations

import contextlib
import sys
import time

import click

from fredset import FredsetError
from fredset.augment import STRATEGY
from fredset.data import load_dataset
from fredset.distributed import gather_objects, init_from_environment, main_first
from fredset.experts import SEED_STRIDE, ExpertBuffer, expert_path, index_ranges, train_experts
from fredset.files import resolve_device
from fredset.progress import Progress

from .options import data_options, dataset_option, device_option
from .running import across_ranks, reports_errors


@click.command()
@dataset_option
@click.option("--experts", required=True, type=click.IntRange(1), help="Experts 0..E-1 the buffer should hold.")
@click.option("--epochs", required=True, type=click.IntRange(1), help="Epochs each expert trains.")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The buffer directory (created if needed; shared by every process filling it).")
@click.option("--keep-epochs", type=click.IntRange(0), metavar="K",
              help="Keep snapshots 0..K only (default: all epochs); TM needs K >= max-start-epoch + "
              "expert-epochs - 1 (6 for its Fashion-MNIST ipc 1 defaults).")
@click.option("--model", default="convnet", show_default=True, help="Network of the experts.")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Constant SGD learning rate.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--dsa", default=STRATEGY, show_default=True,
              help="DSA strategy (per sample, align_corners=True), or 'none'.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help=f"Expert i is seeded with seed * {SEED_STRIDE} + i.")
@device_option
@data_options
@click.option("--no-test", is_flag=True, help="Do not load the test split (no test accuracy is recorded).")
@reports_errors
@across_ranks
def buffer(dataset: str, experts: int, epochs: int, out: str, keep_epochs: int | None, model: str, lr: float,
           batch_size: int, dsa: str, seed: int, device: str, data_root: str | None, download: bool,
           no_test: bool) -> None:
    """Train expert trajectories for trajectory matching (--objective tm) into DIR.

    Each expert is a network trained from scratch on the real training set (SGD,
    constant lr, no momentum, no weight decay, DSA per sample); its parameters are
    saved at initialisation and after every kept epoch, one file per expert. The
    test accuracy after the last epoch is recorded unless --no-test.

    Finished experts are kept: run the same command again to resume, or run it in
    several processes (or machines sharing DIR) at once to train experts in
    parallel; each expert is claimed by a lock file and trained once. Under
    torchrun, rank r starts with experts r, r+N, ... (one device per process)
    and rank 0 reports for all.

    \b
    Examples:
      fredset buffer --dataset fashion-mnist --experts 100 --epochs 50 --out experts/fmnist
      fredset buffer --dataset fashion-mnist --experts 20 --epochs 20 --keep-epochs 7 --out experts/fmnist-ipc1
      torchrun --nproc-per-node 8 -m fredset_cli buffer --dataset cifar10 --experts 100 --epochs 50 --out c10/
      fredset inspect experts/fmnist
    """
    if keep_epochs is not None and keep_epochs > epochs:
        raise FredsetError(f"--keep-epochs {keep_epochs} cannot exceed --epochs {epochs}")
    context = init_from_environment(resolve_device(device))  # one process: no process group, the device unchanged
    device = context.device
    with main_first(context) if download else contextlib.nullcontext():  # rank 0 downloads, alone
        real = load_dataset(dataset, split="train", root=data_root, download=download)
        test = None
        if not no_test:
            try:
                test = load_dataset(dataset, split="test", root=data_root, download=download)
            except FredsetError as error:
                raise FredsetError(f"{error} (pass --no-test to train without a test set)") from None
    already = [index for index in range(experts) if expert_path(out, index).exists()]
    started = time.perf_counter()
    progress: list[Progress] = []  # the expert being trained

    def on_epoch(expert: int, epoch: int, loss: float) -> None:
        if not progress:  # the options were accepted and training started
            click.echo(f"buffer {out}: {experts} experts x {epochs} epochs of {model} on {real.name} "
                       f"({len(real)} images), {device}; {len(already)} already finished", err=True)
        if epoch == 1:
            progress[:] = [Progress(epochs, unit="epochs", label=f"  expert {expert}")]
        progress[0].update(note=f"loss {loss:.4f}")
        if epoch == epochs:
            progress[0].close()

    try:
        trained = train_experts(real, out, experts=experts, epochs=epochs, keep_epochs=keep_epochs, model=model,
                                lr=lr, batch_size=batch_size, dsa=dsa, seed=seed, device=device, test=test,
                                on_epoch=on_epoch, context=context)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished experts are kept in {out}: run the same command to continue", err=True)
        sys.exit(130)
    trained = sorted(index for mine in gather_objects(trained, context, unequal_work=True) for index in mine)
    if not context.is_main:  # rank 0 reports for every rank
        return
    finished = set(ExpertBuffer(out).experts)
    elsewhere = [index for index in range(experts) if index not in finished]
    click.echo(f"buffer {out}: trained {len(trained)} expert(s) in {time.perf_counter() - started:.1f} s"
               f"{' (' + index_ranges(trained) + ')' if trained else ''}; {len(already)} already there; "
               f"{len(finished & set(range(experts)))}/{experts} finished"
               + (f"; {len(elsewhere)} still being trained by another process" if elsewhere else ""))
