"""Real datasets. (Format issue: the IDX reader; the named-dataset registry comes with the distillation engine.)"""

from .idx import read_idx

__all__ = ["read_idx"]
