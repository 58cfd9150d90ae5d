"""The embedded corpus: eight whole Shakespeare plays shipped in data/corpus/ (provenance in data/README.md)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from gptlab.errors import UserError

CORPUS_FILE = Path(__file__).resolve().parent / "corpus" / "shakespeare.jsonl.gz"
# sha256 of the shipped file's bytes, as written by data/corpus/make_corpus.py (see data/README.md).
CORPUS_SHA256 = "785125298615f21d6b99991b4ce5f2672725ae1ca26cc23bc4ba731d92356c9d"


def corpus_bytes() -> bytes:
    """The shipped file's bytes after checking their sha256 (a clear error if it is missing or modified)."""
    if not CORPUS_FILE.is_file():
        raise UserError(
            f"the embedded corpus {CORPUS_FILE} is missing; restore it from the repository (git checkout)"
        )
    raw = CORPUS_FILE.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise UserError(
            f"the embedded corpus {CORPUS_FILE.name} was modified (sha256 {digest[:12]}…, expected "
            f"{CORPUS_SHA256[:12]}…); restore it from git, or put your text in files and use data=text_files"
        )
    return raw


def embedded_documents() -> list[dict]:
    """The plays in order, each ``{"title", "file", "text"}``."""
    lines = gzip.decompress(corpus_bytes()).decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line]
