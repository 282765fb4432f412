"""fredset: FreD dataset distillation, the .fredset file format, and a Dataset that decodes it."""

from .artifact import Artifact
from .dataset import FredDataset
from .errors import FredsetError
from .format import FileInfo, load, load_bytes, read_file, save, save_bytes
from .version import __version__

__all__ = ["Artifact", "FileInfo", "FredDataset", "FredsetError", "load", "load_bytes", "read_file", "save",
           "save_bytes", "__version__"]
