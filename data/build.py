"""Prepare a corpus: tokenize it into ``train.bin`` / ``val.bin`` (flat memmaps) and ``meta.json``.

The command line is data/__main__.py (``python -m data data=<name>``).
``prepare(cfg)`` is idempotent and cheap when nothing changed (train.py calls it at every start): it compares
the settings and a stamp of the input (file sizes and times) with ``meta.json`` and returns at once. Writes go
to a temporary folder inside the output folder and are renamed into place when complete; ``meta.json`` comes
last, so a folder with a ``meta.json`` is always whole.

Integrity: ``meta.json`` records a checksum of every byte of each ``.bin`` (data/integrity.py) and one of its
own content. A truncated, zeroed or edited file, or a hand-edited ``meta.json``, fails the check, and ``prepare``
makes the folder again (saying why). Concurrent ``prepare`` calls on one folder take turns on its lock.

Where it writes: ``rundir.outdir.check_out_dir`` decides whether ``data.out_dir`` may be written (never a file,
the checkout or home, nor a folder whose ``train.bin``/``val.bin``/``meta.json`` another program wrote); the folder
gets a ``.gptlab-data`` marker. Only this tool's own temporaries there are ever removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gptlab.errors import UserError, disk_full_cause
from gptlab.rundir.files import DirLock, read_json, remove_stale_temps, write_json
from gptlab.rundir.outdir import check_out_dir

from .config import PREPARED_ROOT, DataConfig
from .integrity import file_checksum, is_legacy, matches
from .tokenizers import (
    get_tokenizer,
    hf_tokenizer_meta,
    is_tokenizer_path,
    read_tokenizer_json,
    text_sha256,
    tokenizer_choices,
    tokenizer_label,
)

FORMAT = "gptlab-data"
VERSION = 1
WORK_PREFIX = ".gptlab-prepare-"  # the temporary folder a preparation writes into (inside the output folder)
MIN_SPLIT_TOKENS = 16  # fewer tokens than this in train or val is surely a mistake
AUTO_PARALLEL_CHARS = 16 << 20  # inputs larger than this are tokenized with all cores when num_proc is null


# ---------------------------------------------------------------- meta


def load_meta(ddir) -> dict:
    """The prepared folder's meta.json as a dict (raises UserError if it is not a prepared folder)."""
    ddir = Path(ddir)
    if ddir.name.endswith(".bin"):
        ddir = ddir.parent
    f = ddir / "meta.json"
    if not f.is_file():
        raise UserError(
            f"{ddir} is not a prepared data folder (no meta.json); prepare the data first (python -m data)"
        )
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{f} is corrupt; delete {ddir} and prepare again") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{f} was not written by data.prepare; delete {ddir} and prepare again")
    return meta


def _meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_prepared(out: Path) -> tuple[dict | None, str]:
    """(meta, "") for a whole, unaltered prepared folder, else (None, why it is not)."""
    try:
        meta = load_meta(out)
    except UserError as e:
        return None, str(e)
    try:
        if meta.get("meta_sha256") != _meta_checksum(meta):
            return None, "meta.json was edited"
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in ("train", "val"):
            f = out / f"{split}.bin"
            if not f.is_file() or f.stat().st_size != meta[f"{split}_tokens"] * itemsize:
                return None, f"{split}.bin is missing or has the wrong size"
            if not matches(f, meta["fingerprints"][split]):
                return None, f"{split}.bin does not match its checksum (damaged or edited)"
    except (KeyError, TypeError, ValueError, OSError) as e:
        return None, f"meta.json is incomplete ({e})"
    return meta, ""


def find_prepared(data_cfg: dict, expect: dict) -> Path | None:
    """The prepared folder of a run's data config, read-only: never prepared or written here.

    Returned only when it is whole and holds the same data the run trained on (``expect`` is the run's data
    meta: same tokenizer, vocabulary and source checksum); None otherwise. For tools that read a run.
    """
    try:
        out = DataConfig.from_dict(data_cfg).resolved_out_dir()
    except (UserError, TypeError, ValueError):
        return None
    meta, _ = check_prepared(out)
    same = meta is not None and all(
        meta.get(k) == expect.get(k)
        for k in ("tokenizer", "vocab_size", "source_sha256", "hf_tokenizer_sha256")
    )
    return out if same else None


# ---------------------------------------------------------------- tokenization (runs in datasets workers)


def _tokenize_batch(
    batch, indices, spec: dict, val_fraction: float, seed: int, by_documents: bool, dtype: str
):
    """Map function: ids per chunk (+ end-of-text after a document's last chunk) and its split flag."""
    tok = _worker_tokenizer(
        spec.get("tokenizer"), spec.get("chars"), spec.get("hf_tokenizer"), spec.get("eot_id")
    )
    eot, sep = tok.eot_id, spec.get("sep", "")
    docs = batch["doc"] if "doc" in batch else indices
    lasts = batch["last"] if "last" in batch else [True] * len(docs)
    ids_out, val_out = [], []
    for text, doc, last in zip(batch["text"], docs, lasts):
        if last and eot is None:
            text = text + (sep[1:] if text.endswith("\n") else sep)
        if tok.name == "char":
            ids = tok.encode_array(text)
        else:
            ids = tok.encode_ordinary(text)
        if last and eot is not None:
            ids = np.append(ids, eot)
        ids_out.append(np.asarray(ids, dtype=dtype))
        val_out.append(by_documents and _doc_uniform(seed, int(doc)) < val_fraction)
    return {"ids": ids_out, "val": val_out}


@functools.lru_cache(maxsize=4)
def _worker_tokenizer(name: str, chars: str | None, hf_json: str | None = None, eot_id: int | None = None):
    """One tokenizer per worker process (the char lookup table is built once, not per batch)."""
    if name == "hf":
        return get_tokenizer({"tokenizer": "hf", "hf_tokenizer": hf_json, "eot_id": eot_id})
    return get_tokenizer({"tokenizer": name, "chars": chars} if chars is not None else {"tokenizer": name})


def _doc_uniform(seed: int, doc: int) -> float:
    """A deterministic uniform number in [0, 1) for (seed, document index): the document split."""
    h = hashlib.blake2b(f"{seed}:{doc}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _char_vocab(ds, num_proc: int) -> str:
    def chars_of(batch):
        return {"chars": ["".join(sorted(set(t))) for t in batch["text"]]}

    found = ds.map(
        chars_of,
        batched=True,
        batch_size=16,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        desc="char vocabulary",
    )
    return "".join(sorted(set("".join(found["chars"])) | set("\n")))


def _stream_tokens(tds):
    """Yield (ids uint32/uint64 array, val bool mask) per Arrow record batch of the tokenized dataset."""
    import pyarrow.compute as pc

    for rb in tds.data.table.to_batches(max_chunksize=64):
        col = rb.column(rb.schema.get_field_index("ids"))
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        values = col.flatten().to_numpy(zero_copy_only=False)
        val = rb.column(rb.schema.get_field_index("val")).to_numpy(zero_copy_only=False)
        yield values, np.repeat(val, lengths)


# ---------------------------------------------------------------- the pipeline


def _tokenizer_spec(cfg: DataConfig, chars: str | None) -> dict:
    if cfg.tokenizer == "char":
        return {"tokenizer": "char", "chars": chars, "sep": "\n\n"}
    if is_tokenizer_path(cfg.tokenizer):  # a Hugging Face tokenizer.json, stored whole in the meta
        return {**hf_tokenizer_meta(cfg.tokenizer), "sep": "\n\n"}
    if cfg.tokenizer not in tokenizer_choices():
        raise UserError(
            f"unknown tokenizer {cfg.tokenizer!r}; choose one of {', '.join(tokenizer_choices())}, "
            "or the path of a Hugging Face tokenizer.json"
        )
    get_tokenizer(cfg.tokenizer)  # fail now (offline download, bad rank file) rather than inside a worker
    return {"tokenizer": cfg.tokenizer, "sep": "\n\n"}


def _build_text(cfg: DataConfig, work: Path) -> tuple[dict, Path, Path]:
    """Tokenize a text source into work/train.bin and work/val.bin; return (meta, train path, val path)."""
    import datasets

    from .sources import load_text_source

    if cfg.tokenizer != "char":
        _tokenizer_spec(cfg, None)  # unknown/unavailable tokenizer: fail before reading any data
    ds, info = load_text_source(cfg, work)
    chars = info.chars if info.chars >= 0 else None
    num_proc = cfg.num_proc or (
        min(8, len(os.sched_getaffinity(0))) if (chars is None or chars > AUTO_PARALLEL_CHARS) else 1
    )
    num_proc = max(1, min(int(num_proc), len(ds)))
    vocab_chars = _char_vocab(ds, num_proc) if cfg.tokenizer == "char" else None
    spec = _tokenizer_spec(cfg, vocab_chars)
    tok = get_tokenizer(spec)
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    feats = datasets.Features(
        {"ids": datasets.Sequence(datasets.Value(np.dtype(dtype).name)), "val": datasets.Value("bool")}
    )
    tds = ds.map(
        _tokenize_batch,
        batched=True,
        batch_size=16,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        features=feats,
        fn_kwargs=dict(
            spec=spec,
            val_fraction=float(cfg.val_fraction),
            seed=int(cfg.seed),
            by_documents=cfg.split == "documents",
            dtype=np.dtype(dtype).name,
        ),
        cache_file_name=str(work / "tokens.arrow"),
        desc=f"tokenizing ({cfg.tokenizer}, {num_proc} proc)",
    )
    total = int(sum(len(v) for v, _ in _stream_tokens(tds))) if cfg.split == "tail" else None
    n_val_tail = max(1, int(round(total * float(cfg.val_fraction)))) if total is not None else 0
    train_f, val_f = work / "train.bin", work / "val.bin"
    seen = n_train = n_val = 0
    with open(train_f, "wb") as ft, open(val_f, "wb") as fv:
        for values, is_val in _stream_tokens(tds):
            values = values.astype(dtype, copy=False)
            if total is not None:  # tail split: cut the stream at token index total - n_val_tail
                cut = min(max(total - n_val_tail - seen, 0), len(values))
                tr, va = values[:cut], values[cut:]
            else:
                tr, va = values[~is_val], values[is_val]
            tr.tofile(ft)
            va.tofile(fv)
            seen += len(values)
            n_train += len(tr)
            n_val += len(va)
    del tds, ds
    if cfg.split == "documents" and (n_val == 0 or n_train == 0):
        which = "val" if n_val == 0 else "train"
        raise UserError(
            f"split=documents left {which} empty ({info.documents} documents, val_fraction={cfg.val_fraction}); "
            "use data.split=tail or more documents"
        )
    meta = {
        "tokenizer": spec["tokenizer"],
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(dtype).name,
        "eot_id": tok.eot_id,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "source_sha256": info.sha256,
        "documents": info.documents,
        "chars": vocab_chars,
    }
    if vocab_chars is None:
        meta.pop("chars")
    if spec["tokenizer"] == "hf":
        meta.update({k: v for k, v in spec.items() if k.startswith("hf_")})
    return meta, train_f, val_f


def _build_induction(cfg: DataConfig, work: Path) -> tuple[dict, Path, Path]:
    from .induction import induction_splits

    train, val = induction_splits(cfg)
    dtype = np.uint16 if int(cfg.induction_vocab) <= 1 << 16 else np.uint32
    train_f, val_f = work / "train.bin", work / "val.bin"
    train.astype(dtype).tofile(train_f)
    val.astype(dtype).tofile(val_f)
    digest = hashlib.sha256(json.dumps(cfg.settings(), sort_keys=True).encode()).hexdigest()
    meta = {
        "tokenizer": "ids",
        "vocab_size": int(cfg.induction_vocab),
        "dtype": np.dtype(dtype).name,
        "eot_id": None,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "source_sha256": digest,
        "documents": int(cfg.induction_train_seqs) + int(cfg.induction_val_seqs),
        "sample_align": int(cfg.induction_len) * int(cfg.induction_repeats),
    }
    return meta, train_f, val_f


def same_tokens(old: dict | None, new: dict) -> bool:
    """Whether a prepared folder's settings give ``new``'s tokens: equal, or equal but for the path the same
    tokenizer.json (by content hash) was read from (a copy, e.g. the one a resumed run carries)."""
    if old == new:
        return True
    if not isinstance(old, dict) or "hf_tokenizer_sha256" not in new:
        return False
    return {**old, "tokenizer": None} == {**new, "tokenizer": None}


def prepare(cfg, *, quiet: bool = False) -> Path:
    """Make sure ``cfg``'s prepared folder is up to date and whole, and return it (cheap when nothing changed).

    ``cfg`` is a DataConfig, a dict or the Hydra ``cfg.data`` node. In multi-process training call it on rank 0
    only, then wait at a barrier. A damaged or edited folder is prepared again.
    """
    from .sources import source_stamp

    cfg = DataConfig.from_dict(cfg)
    out = cfg.resolved_out_dir()
    settings = cfg.settings()
    if is_tokenizer_path(cfg.tokenizer):  # its content, not only its path, decides the tokens
        settings["hf_tokenizer_sha256"] = text_sha256(read_tokenizer_json(cfg.tokenizer)[1])
    stamp = source_stamp(cfg)  # resolves files (clear errors for missing paths) without reading them
    found = read_json(out / "meta.json", {})
    if found.get("tokenizer") not in (None, tokenizer_label(cfg.tokenizer)):
        raise UserError(
            f"{out} holds data prepared with tokenizer {found['tokenizer']}, not {cfg.tokenizer}; "
            "set data.out_dir to another folder (or data.name), or delete that folder"
        )
    old, _ = check_prepared(out)
    if _up_to_date(old, settings, stamp) and not _legacy(old):
        return out  # fast path: nothing changed (the token files were checked whole)
    created = not out.exists()
    # the one rule for output folders; this tool's default place, or a folder it prepared, is its own
    own = found.get("format") == FORMAT or out == PREPARED_ROOT / cfg.name
    check_out_dir(out, "data", "data.out_dir", own=own)  # creates and marks the folder
    try:
        # the lock file sits beside the folder, which then holds only train.bin, val.bin and meta.json
        lock = out.parent / f".{out.name}.lock"
        with DirLock(lock, "data prepare", what="prepared-data folder", blocking=True):
            return _prepare_locked(cfg, out, settings, stamp, quiet)
    except BaseException:  # nothing half-written: a folder we created goes away again
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _prepare_locked(cfg: DataConfig, out: Path, settings: dict, stamp, quiet: bool) -> Path:
    """prepare() under the folder's lock: another process may have just done the work."""
    # what a killed prepare left (no one else is writing now): only this tool's own temporaries
    for leftover in out.glob(WORK_PREFIX + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    remove_stale_temps(out, names=("meta.json", ".gptlab-data"))
    for name in ("train.bin", "val.bin", "meta.json"):
        if (out / name).is_dir():
            raise UserError(
                f"{out / name} is a folder where the prepared data keeps a file; move it away "
                "(python -m data never deletes what it did not write) and run again"
            )
    old, why = check_prepared(out)
    if _up_to_date(old, settings, stamp):
        if old is not None and _legacy(
            old
        ):  # prepared before whole-file checksums (checked by sampling): record them now
            _write_meta(out, {**old, "fingerprints": _checksums(out / "train.bin", out / "val.bin")})
        return out
    if old is not None and same_tokens(old.get("settings"), settings) and cfg.source == "files":
        # the file stamps changed (e.g. touched): if the contents did not, only refresh the stamp
        from .sources import files_sha256, resolve_files

        files = resolve_files(cfg.path)[: int(cfg.max_documents or 0) or None]
        if files_sha256(files)[0] == old.get("source_sha256"):
            _write_meta(
                out,
                {
                    **old,
                    "source_stamp": stamp,
                    "fingerprints": _checksums(out / "train.bin", out / "val.bin"),
                },
            )
            return out
    if not quiet:
        again = f" (again: {why})" if (out / "meta.json").exists() and old is None else ""
        print(
            f"preparing data {cfg.name!r} ({cfg.source}, tokenizer {cfg.tokenizer}) into {out}{again}",
            file=sys.stderr,
        )
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out))
    try:
        if cfg.source == "induction":
            meta, train_f, val_f = _build_induction(cfg, work)
        else:
            meta, train_f, val_f = _build_text(cfg, work)
        for split in ("train", "val"):
            if meta[f"{split}_tokens"] < MIN_SPLIT_TOKENS:
                raise UserError(
                    f"the corpus is too small: {split} gets {meta[f'{split}_tokens']} tokens "
                    f"(at least {MIN_SPLIT_TOKENS}); give more text or change data.val_fraction"
                )
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "name": cfg.name,
            **meta,
            "source": cfg.source,
            "split": cfg.split,
            "val_fraction": float(cfg.val_fraction),
            "settings": settings,
            "source_stamp": stamp,
            "fingerprints": _checksums(train_f, val_f),
            "prepare_s": round(time.time() - t0, 3),
        }
        (out / "meta.json").unlink(missing_ok=True)  # from here until meta.json is back, "unprepared"
        os.replace(train_f, out / "train.bin")
        os.replace(val_f, out / "val.bin")
        _write_meta(out, meta)
    except Exception as e:
        full = disk_full_cause(e)  # datasets wraps a full disk in its own error
        if full is None:
            raise
        raise OSError(full.errno, full.strerror, full.filename or str(out)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(
            f"prepared {cfg.name!r}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
            f"(vocab {meta['vocab_size']:,}, {meta['dtype']}) in {meta['prepare_s']:.1f} s -> {out}",
            file=sys.stderr,
        )
    return out


def _up_to_date(meta: dict | None, settings: dict, stamp) -> bool:
    return (
        meta is not None and same_tokens(meta.get("settings"), settings) and meta.get("source_stamp") == stamp
    )


def _legacy(meta: dict | None) -> bool:
    """A folder prepared before whole-file checksums (its fingerprints sample 64 blocks)."""
    return meta is not None and any(is_legacy(v) for v in meta["fingerprints"].values())


def _checksums(train_f: Path, val_f: Path) -> dict:
    return {"train": file_checksum(train_f), "val": file_checksum(val_f)}


def _write_meta(out: Path, meta: dict) -> None:
    write_json(out / "meta.json", {**meta, "meta_sha256": _meta_checksum(meta)})
