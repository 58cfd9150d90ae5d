"""Sources of documents: the embedded corpus, local text files, a Hugging Face hub dataset, synthetic induction.

Each text source becomes a ``datasets.Dataset`` of *chunks* with columns ``text``, ``doc`` (document index) and
``last`` (True on a document's last chunk). Long documents are cut into ~256 KB chunks right after a single
newline between two non-space characters: the GPT-2 pre-tokenizer makes that newline a token of its own whether
or not the text goes on, and no pre-token crosses it, so the ids are exactly those of encoding the whole
document at once (tested), while ``map(num_proc=...)`` can share the work.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gptlab.errors import UserError

from .config import DataConfig
from .corpus import CORPUS_SHA256, embedded_documents

CHUNK_CHARS = 1 << 18
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


@dataclass
class SourceInfo:
    sha256: str  # checksum of the input (for hub sources: of datasets' fingerprint of the loaded split)
    documents: int
    chars: int


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` characters at tokenization-safe points (see module doc)."""
    out, start = [], 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return out


# ---------------------------------------------------------------- local files


def resolve_files(path) -> list[Path]:
    """Files named by a path, glob or folder (or a list of them), sorted; clear errors when there are none."""
    specs = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    files: list[Path] = []
    for spec in specs:
        spec = os.path.expanduser(str(spec))
        if glob.has_magic(spec):
            hits = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not hits:
                raise UserError(f"no files match {spec!r}; check the pattern (use ** for subfolders)")
            files += hits
        elif Path(spec).is_dir():
            hits = sorted(
                p
                for p in Path(spec).rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(spec).parts)
            )
            if not hits:
                raise UserError(
                    f"folder {spec} holds no files; put text files in it or point data.path elsewhere"
                )
            files += hits
        elif Path(spec).is_file():
            files.append(Path(spec))
        else:
            raise UserError(f"data.path {spec} does not exist; give a text file, a glob or a folder")
    return files


def read_text(path: Path, raw: bytes | None = None) -> str:
    """Decode one file as UTF-8 text, refusing empty, binary and non-UTF-8 files with one clear line."""
    raw = path.read_bytes() if raw is None else raw
    if not raw.strip():
        raise UserError(f"file {path} is empty; remove it or give it some text")
    if b"\x00" in raw[:65536]:
        raise UserError(f"file {path} looks binary (it has NUL bytes); give plain UTF-8 text files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it (e.g. iconv -t utf-8) or remove it"
        ) from None


def files_sha256(files: list[Path]) -> tuple[str, int]:
    """(checksum of the files' names and bytes, total characters), validating each file as text."""
    h, chars = hashlib.sha256(), 0
    for p in files:
        raw = p.read_bytes()
        chars += len(read_text(p, raw))
        h.update(str(p).encode() + b"\0" + hashlib.sha256(raw).digest())
    return h.hexdigest(), chars


def files_stamp(files: list[Path]) -> list:
    """Cheap change detector: (path, size, mtime_ns) of every file."""
    out = []
    for p in files:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


# datasets.Dataset.from_generator shards list-valued gen_kwargs across calls, so lists go in as JSON strings.


def _file_chunks(files_json: str):
    for doc, f in enumerate(json.loads(files_json)):
        pieces = chunk_text(read_text(Path(f)))
        for j, piece in enumerate(pieces):
            yield {"text": piece, "doc": doc, "last": j == len(pieces) - 1}


def _embedded_chunks(max_documents: int):
    texts = [d["text"] for d in embedded_documents()][: max_documents or None]
    for doc, text in enumerate(texts):
        pieces = chunk_text(text)
        for j, piece in enumerate(pieces):
            yield {"text": piece, "doc": doc, "last": j == len(pieces) - 1}


# ---------------------------------------------------------------- stamps and loading


def source_stamp(cfg: DataConfig) -> dict:
    """What identifies the input without reading it all (compared on every prepare() call)."""
    if cfg.source == "embedded":
        return {"sha256": CORPUS_SHA256}
    if cfg.source == "files":
        files = resolve_files(cfg.path)
        if cfg.max_documents:
            files = files[: int(cfg.max_documents)]
        return {"files": files_stamp(files)}
    return {}  # hub: the settings (id, config, split, revision) are the stamp; induction: settings only


def load_text_source(cfg: DataConfig, workdir: Path):
    """Return (chunks Dataset, SourceInfo). Reads and validates the whole input; writes only under workdir."""
    import datasets

    cache = str(workdir / "cache")
    if cfg.source == "embedded":
        texts = [d["text"] for d in embedded_documents()]
        if cfg.max_documents:
            texts = texts[: int(cfg.max_documents)]
        ds = datasets.Dataset.from_generator(
            _embedded_chunks, gen_kwargs={"max_documents": int(cfg.max_documents or 0)}, cache_dir=cache
        )
        info = SourceInfo(CORPUS_SHA256, len(texts), sum(map(len, texts)))
        return ds, info
    if cfg.source == "files":
        files = resolve_files(cfg.path)
        if cfg.max_documents:
            files = files[: int(cfg.max_documents)]
        digest, chars = files_sha256(files)  # validates every file before anything is written
        ds = datasets.Dataset.from_generator(
            _file_chunks, gen_kwargs={"files_json": json.dumps([str(p) for p in files])}, cache_dir=cache
        )
        return ds, SourceInfo(digest, len(files), chars)
    if cfg.source == "hub":
        ds = load_hub(cfg)
        info = SourceInfo(hashlib.sha256(ds._fingerprint.encode()).hexdigest(), len(ds), -1)
        return ds, info
    raise ValueError(f"not a text source: {cfg.source}")  # induction is generated, see data/induction.py


# ---------------------------------------------------------------- hub


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when the user asked Hugging Face libraries to stay offline."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick HEAD request to the hub endpoint (honours HF_ENDPOINT and *_proxy variables)."""
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/api/datasets?limit=1"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:  # an HTTP error still means the server answered
        return True
    except Exception:
        return False
    return True


def load_hub(cfg: DataConfig):
    """``datasets.load_dataset(path, name, split, revision)`` restricted to the text column, renamed ``text``.

    A local folder or a packaged builder name also works (that is how the tests exercise this path). Remote ids
    need the network unless cached: offline, this fails at once with one line instead of retrying for ~23 s.
    """
    import datasets

    path = str(cfg.path)
    remote = not Path(os.path.expanduser(path)).exists() and "/" in path
    if remote and not hub_offline() and not hub_reachable():
        raise UserError(
            f"cannot reach the Hugging Face hub to load {path!r}; connect to the internet, or set HF_HUB_OFFLINE=1 "
            "to use a copy already in your HF cache"
        )
    try:
        ds = datasets.load_dataset(
            os.path.expanduser(path), name=cfg.hub_config, split=cfg.hub_split, revision=cfg.hub_revision
        )
    except UserError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        names = [n for n in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if _env_true(n)]
        hint = f" (offline: {' and '.join(names)} set, and it is not in your HF cache)" if names else ""
        raise UserError(f"could not load dataset {path!r}{hint}: {type(e).__name__}: {first}") from None
    if cfg.text_column not in ds.column_names:
        raise UserError(
            f"dataset {path!r} has no column {cfg.text_column!r}; set data.text_column to one of {ds.column_names}"
        )
    if cfg.max_documents:
        ds = ds.select(range(min(int(cfg.max_documents), len(ds))))
    ds = ds.select_columns([cfg.text_column])
    if cfg.text_column != "text":
        ds = ds.rename_column(cfg.text_column, "text")
    if len(ds) == 0:
        raise UserError(f"dataset {path!r} split {cfg.hub_split!r} is empty; pick another data.hub_split")
    return ds
