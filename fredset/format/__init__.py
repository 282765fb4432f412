"""The .fredset container (spec/FORMAT.md): header, codec, metadata, reader, writer. Knows nothing of training."""

from .header import HEADER_SIZE, MAGIC, VERSION
from .reader import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_FILE_BYTES, FileInfo, load, load_bytes, read_file
from .writer import save, save_bytes, to_bytes

__all__ = ["HEADER_SIZE", "MAGIC", "VERSION", "DEFAULT_MAX_DECODED_BYTES", "DEFAULT_MAX_FILE_BYTES",
           "FileInfo", "load", "load_bytes", "read_file", "save", "save_bytes", "to_bytes"]
