"""Integrity of the prepared token files: whole-file checksums and the token-id range check.

``meta.json`` records ``sha256:<hex>`` of every byte of ``train.bin`` and ``val.bin`` (hashed in 1 MiB chunks;
docs/data.md gives the cost). ``prepare()`` checks both at every call, so every training start reads the
files once; a mismatch prepares the folder again. :class:`data.BatchLoader` checks the file it reads against
meta.json too, and refuses a mismatch in one line. Each file is hashed once per process: one verified more than
:data:`TRUST_AFTER_S` seconds after its last modification is not hashed again while its size, inode and
modification and change times stay the same (a later write moves them past the remembered ones).

Folders prepared before the whole-file checksum hold a sampled fingerprint (sha256 of the size and 64 evenly
spaced 4 KiB blocks); it is still accepted, and ``prepare()`` replaces it by the whole-file checksum.

:func:`check_token_ids` is the one range check of token ids read from a token file (the loader, heads.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from gptlab.errors import UserError

CHUNK = 1 << 20
PREFIX = "sha256:"
LEGACY_BLOCKS, LEGACY_BYTES = 64, 4096
TRUST_AFTER_S = 2.0  # longer than any filesystem's timestamp granularity that matters here (FAT: 2 s)
_verified: set[tuple] = set()


def forget_verified() -> None:
    """Forget which files this process has verified: the next check hashes them again, as a new process would
    (bench/checksum_bench.py times that check)."""
    _verified.clear()


def file_checksum(path: str | Path) -> str:
    """``sha256:<hex>`` of the whole file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return PREFIX + h.hexdigest()


def legacy_fingerprint(path: str | Path) -> str:
    """The sampled fingerprint of folders prepared before the whole-file checksum (sha256, no prefix)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(LEGACY_BLOCKS):
            f.seek(max(0, size - LEGACY_BYTES) * i // (LEGACY_BLOCKS - 1))
            h.update(f.read(LEGACY_BYTES))
    return h.hexdigest()


def is_legacy(expected: str) -> bool:
    return not str(expected).startswith(PREFIX)


def matches(path: str | Path, expected: str) -> bool:
    """Whether the file's content has the checksum (or legacy fingerprint) ``expected`` recorded in meta.json."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected)
    if key in _verified:
        return True
    ok = (legacy_fingerprint(path) if is_legacy(expected) else file_checksum(path)) == expected
    # remembered only for a file that had not changed for a while: a later write then changes its timestamps
    if ok and time.time() - st.st_mtime > TRUST_AFTER_S:
        _verified.add(key)
    return ok


def verify_token_file(path: str | Path, meta: dict) -> None:
    """Raise a one-line UserError when ``train.bin``/``val.bin`` differs from the checksum in ``meta``."""
    path = Path(path)
    expected = (meta.get("fingerprints") or {}).get(path.stem)
    if not expected:
        return  # not a file prepare() wrote (no checksum recorded for it)
    if not matches(path, expected):
        raise UserError(
            f"{path} does not match the checksum in {path.parent / 'meta.json'} (damaged or edited); prepare "
            "the data again: python -m data with the same data settings (train.py does it when it starts)"
        )


def check_token_ids(ids, vocab_size: int, source: str | Path, fix: str | None = None) -> None:
    """Raise a one-line UserError when a token id read from ``source`` is outside ``[0, vocab_size)``.
    ``fix`` says what to do; by default the file is taken as damaged."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    hi, lo = int(ids.max()), (int(ids.min()) if ids.dtype.kind != "u" else 0)
    if hi >= vocab_size or lo < 0:
        bad = hi if hi >= vocab_size else lo
        fix = (
            fix
            or f"the prepared data is damaged; delete {Path(source).parent} and run again (it is prepared anew)"
        )
        raise UserError(f"{source} holds token id {bad}, outside the vocabulary of {vocab_size}: {fix}")
