"""Expert trajectories for trajectory matching (TM): the buffer directory format and its reader
(:mod:`~fredset.experts.store`), the claim protocol that lets many processes fill one buffer
(:mod:`~fredset.experts.locks`), and expert training (:mod:`~fredset.experts.training`)."""

from .store import BUFFER_FORMAT, BUFFER_VERSION, MANIFEST, ExpertBuffer, expert_path, index_ranges, write_expert
from .training import SEED_STRIDE, train_experts

__all__ = ["BUFFER_FORMAT", "BUFFER_VERSION", "MANIFEST", "SEED_STRIDE", "ExpertBuffer", "expert_path",
           "index_ranges", "train_experts", "write_expert"]
