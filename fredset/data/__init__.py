"""Real datasets: the registry of named datasets, the IDX reader, and loaders for whole splits.

    >>> from fredset.data import load_dataset
    >>> train = load_dataset("fashion-mnist", split="train")     # RealData, normalised float32 [N, C, H, W]
    >>> batch = train.sample(3, 64, generator=torch.Generator().manual_seed(0))
"""

from .idx import read_idx
from .realdata import RealData, hold_out
from .registry import DATASETS, DatasetSpec, dataset_spec, find_root
from .sources import load_dataset

__all__ = ["DATASETS", "DatasetSpec", "RealData", "dataset_spec", "find_root", "hold_out", "load_dataset", "read_idx"]
