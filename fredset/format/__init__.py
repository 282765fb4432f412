"""The .fredset container (spec/FORMAT.md): header, codec, metadata, reader, writer. Knows nothing of training."""

from .header import HEADER_SIZE, MAGIC, VERSION
from .reader import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_FILE_BYTES, FileInfo, load, read_file
from .writer import pack_container, save, to_bytes, write_atomically

__all__ = ["HEADER_SIZE", "MAGIC", "VERSION", "DEFAULT_MAX_DECODED_BYTES", "DEFAULT_MAX_FILE_BYTES",
           "FileInfo", "load", "pack_container", "read_file", "save", "to_bytes",
           "write_atomically"]
