"""Reading and writing IDX files (the MNIST format), gzip-compressed or not.

An IDX file starts with a 4-byte big-endian magic number ``0x0000TTDD``: ``TT`` the element
type (``0x08`` = uint8) and ``DD`` the number of dimensions, followed by one big-endian
uint32 per dimension, then the data. Images are ``0x00000803`` (N, rows, cols) and labels
``0x00000801`` (N,).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ggdsl.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}

#: Canonical IDX file names (without ``.gz``) per split.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@functools.cache
def known_checksums() -> dict[str, dict[str, dict[str, str]]]:
    """Returns ``checksums.json``: source -> canonical file name -> {"gz", "raw"} SHA-256."""
    text = (Path(__file__).with_name("checksums.json")).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def candidate_names(canonical: str) -> list[str]:
    """File names accepted for a canonical IDX name: dash or dot before ``idx``, gz or not."""
    stem, _, kind = canonical.rpartition("-idx")
    dotted = f"{stem}.idx{kind}"
    return [canonical + ".gz", canonical, dotted + ".gz", dotted]


def find_split_files(folder: Path, split: str, source: str) -> tuple[Path, Path]:
    """Finds the image and label files of a split in a folder.

    Args:
        folder: Folder holding the four MNIST-layout files.
        split: ``train`` or ``test`` (``t10k`` files).
        source: Source name for messages.

    Returns:
        ``(images_path, labels_path)``.

    Raises:
        DataError: If the folder or a file is missing.
    """
    if not folder.is_dir():
        raise DataError(f"{source}: {folder} is not a folder")
    found = []
    for canonical in SPLIT_FILES[split]:
        for name in candidate_names(canonical):
            if (folder / name).is_file():
                found.append(folder / name)
                break
        else:
            raise DataError(
                f"{source}: no {canonical}[.gz] in {folder} (for split {split!r}); "
                f"present: {', '.join(sorted(p.name for p in folder.iterdir())) or 'nothing'}"
            )
    return found[0], found[1]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path, expected: Mapping[str, str] | None) -> bytes:
    """Reads a file, decompressing gzip, and checks it against expected checksums."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    compressed = blob[:2] == b"\x1f\x8b"
    if expected is not None and compressed and _sha256(blob) == expected["gz"]:
        return gzip.decompress(blob)
    if compressed:
        try:
            data = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            if expected is not None:
                raise DataError(
                    f"checksum mismatch for {path}: expected sha256 {expected['gz']}, got "
                    f"{_sha256(blob)} (the file is corrupt: {exc})"
                ) from exc
            raise DataError(f"{path} is not a valid gzip file: {exc}") from exc
    else:
        data = blob
    if expected is not None and _sha256(data) != expected["raw"]:
        want = expected["gz"] if compressed else expected["raw"]
        got = _sha256(blob)
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {want}, got {got} "
            "(the file is corrupt or not the expected dataset)"
        )
    return data


def parse_idx(data: bytes, name: str, expected_magic: int | None = None) -> np.ndarray:
    """Decodes the bytes of an IDX file.

    Args:
        data: Uncompressed file content.
        name: File name for messages.
        expected_magic: If given, the magic number the file must have.

    Returns:
        The array (native byte order), read-only.

    Raises:
        DataError: On a wrong or unknown magic number or a size that does not match.
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    kind = {IMAGES_MAGIC: "image", LABELS_MAGIC: "label"}.get(expected_magic or -1, "IDX")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{name}: not an IDX {kind} file: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(f"{name}: not an IDX file: magic number 0x{magic:08x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    size = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != size:
        raise DataError(
            f"{name}: IDX header says shape {shape} ({size} bytes of data) but the file holds "
            f"{len(data) - header} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=header)
    array = array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=16)
def _read_idx_cached(
    path: str, size: int, mtime_ns: int, expected_magic: int | None, checksums: tuple | None
) -> np.ndarray:
    expected = dict(checksums) if checksums is not None else None
    return parse_idx(_read_bytes(Path(path), expected), str(path), expected_magic)


def read_idx(
    path: str | os.PathLike,
    expected_magic: int | None = None,
    checksums: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Reads an IDX file (gzip or not), optionally verifying its SHA-256.

    Decoded arrays are cached in memory (keyed by path, size and modification time), so a
    second load of the same file is free; the returned array is read-only.

    Args:
        path: The file.
        expected_magic: Magic number the file must have (:data:`IMAGES_MAGIC`,
            :data:`LABELS_MAGIC`), or ``None`` for any IDX file.
        checksums: ``{"gz": sha256, "raw": sha256}``: the file must match the first if it
            is gzip-compressed and byte-identical, or else its decompressed content must
            match the second.

    Returns:
        The array.

    Raises:
        DataError: Missing file, checksum mismatch (naming the file), bad magic number.
    """
    p = Path(path).resolve()
    try:
        stat = p.stat()
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc}") from exc
    key = tuple(sorted(checksums.items())) if checksums is not None else None
    return _read_idx_cached(str(p), stat.st_size, stat.st_mtime_ns, expected_magic, key)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Writes a uint8 or int8 array as an IDX file (gzip-compressed if the name ends ``.gz``).

    Args:
        path: Destination.
        array: The data; its shape becomes the IDX dimensions.

    Returns:
        The path written.
    """
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise DataError(f"write_idx supports uint8 and int8 arrays, got {array.dtype}")
    magic = (_CODES[array.dtype] << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    p = Path(path)
    p.write_bytes(gzip.compress(data) if p.name.endswith(".gz") else data)
    return p
