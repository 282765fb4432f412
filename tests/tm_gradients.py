"""One TM iteration's meta-gradients (on the coefficients and on syn_lr), in one process or as one rank of a
torchrun job: ``python -m torch.distributed.run --nproc-per-node N tm_gradients.py DATA BUFFER BATCH_SYN
CHECKPOINT_STEPS OUT`` makes rank 0 save them to OUT. tests/test_distributed.py compares them with the same
function run in a single process."""

from __future__ import annotations

import sys

import torch

from fredset.augment import DSA
from fredset.data import load_dataset
from fredset.distill.objectives import TrajectoryMatching
from fredset.distill.synset import init_frequency_synset
from fredset.distributed import Context, init_from_environment, shutdown
from fredset.experts import ExpertBuffer


def gradients(data: str, buffer: str, batch_syn: int, checkpoint_steps: bool,
              context: Context | None = None) -> dict[str, torch.Tensor]:
    """The gradients one iteration leaves (the synthetic set's lr is 0 and syn_lr's lr_lr 0, so nothing moves)."""
    real = load_dataset(data)
    synset = init_frequency_synset(real, 1, 16, generator=torch.Generator().manual_seed(0))
    tm = TrajectoryMatching(ExpertBuffer(buffer), syn_steps=3, max_start_epoch=2, lr_lr=0.0, lr_teacher=0.01,
                            batch_syn=batch_syn, dsa=DSA(align_corners=True), checkpoint_steps=checkpoint_steps)
    if context is not None:
        tm.distribute(context)
    optimizer = torch.optim.SGD(synset.parameters(), lr=0.0)
    loss = tm.iteration(synset, optimizer, torch.Generator().manual_seed(1))
    found = {f"coefficients/{label}": parameter.grad.clone() for label, parameter in enumerate(synset.parameters())}
    return {**found, "syn_lr": tm.syn_lr.grad.clone(), "loss": torch.tensor(loss, dtype=torch.float64)}


if __name__ == "__main__":
    data, buffer, batch_syn, checkpoint_steps, out = sys.argv[1:]
    context = init_from_environment("cpu")
    found = gradients(data, buffer, int(batch_syn), checkpoint_steps == "1", context)
    if context.is_main:
        torch.save(found, out)
    shutdown()
