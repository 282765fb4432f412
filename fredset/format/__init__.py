"""The .fredset container (spec/FORMAT.md): header, codec, metadata, reader, writer. Knows nothing of training.

Format 1.0 (float32, float16, int8 coefficients) and 2.0 (low-bit codes, FORMAT.md section 13) are both read;
the writer picks the version from the encoding (:data:`ENCODINGS`).
"""

from .header import HEADER_SIZE, MAGIC, VERSION
from .reader import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_FILE_BYTES, FileInfo, load, load_bytes, read_file
from .writer import ENCODINGS, save, save_bytes, to_bytes

__all__ = ["HEADER_SIZE", "MAGIC", "VERSION", "DEFAULT_MAX_DECODED_BYTES", "DEFAULT_MAX_FILE_BYTES", "ENCODINGS",
           "FileInfo", "load", "load_bytes", "read_file", "save", "save_bytes", "to_bytes"]
