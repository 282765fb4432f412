"""fredset: FreD dataset distillation, the .fredset file format, and a Dataset that decodes it."""

__version__ = "0.1.0"

from .artifact import Artifact  # noqa: E402
from .dataset import FredDataset  # noqa: E402
from .errors import FredsetError  # noqa: E402
from .format import FileInfo, load, read_file, save  # noqa: E402

__all__ = ["Artifact", "FileInfo", "FredDataset", "FredsetError", "load", "read_file", "save", "__version__"]
