"""DataConfig: what to read, how to tokenize it and where the token files go (mirrors configs/data/*.yaml)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptlab.errors import UserError

SOURCES = ("embedded", "files", "hub", "induction")
SPLITS = ("tail", "documents")
PREPARED_ROOT = Path(__file__).resolve().parent / "prepared"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    """One corpus + tokenizer. Every field is a key of configs/data/<name>.yaml (``data.<field>=...`` in Hydra)."""

    name: str = "shakespeare_char"  # identifies the config; default output folder data/prepared/<name>/
    source: str = "embedded"  # embedded | files | hub | induction
    path: Any = None  # files: a file, glob or folder (or a list of them); hub: a dataset id
    hub_config: str | None = None  # hub: the dataset's configuration name (load_dataset's `name`)
    hub_split: str = "train"  # hub: which split to read (we make our own train/val split from it)
    hub_revision: str | None = None  # hub: git revision (branch, tag or commit) of the dataset
    text_column: str = "text"  # hub: column holding the text
    max_documents: int | None = None  # read only the first N documents (quick tries); null = all
    tokenizer: str = "char"  # char | gpt2 | a tiktoken name | a tokenizer.json path (ids: induction)
    val_fraction: float = 0.1  # share of tokens (tail) or documents (documents) that go to val.bin
    split: str = "tail"  # tail: the last val_fraction of the token stream | documents: per-document
    seed: int = 1337  # seeds the document split and the induction generator
    num_proc: int | None = None  # tokenizer processes; null = 1 for small inputs, else all cores
    out_dir: str | None = None  # prepared folder; null = data/prepared/<name>/
    induction_vocab: int = 256  # induction: number of distinct token ids
    induction_len: int = 32  # induction: segment length L (the longest one when induction_len_min is set)
    induction_len_min: int | None = None  # induction: null = every segment has length induction_len; else
    # each sequence draws its length uniformly from [induction_len_min, induction_len] (docs/data.md)
    induction_repeats: int = 4  # induction: every sequence is L*k tokens, whatever its segment length
    induction_train_seqs: int = 20000  # induction: sequences in train.bin
    induction_val_seqs: int = 1000  # induction: sequences in val.bin

    def __post_init__(self) -> None:
        if isinstance(self.path, (list, tuple)):
            self.path = [str(p) for p in self.path]
        elif self.path is not None:
            self.path = str(self.path)
        if self.source not in SOURCES:
            raise UserError(f"data.source={self.source!r} is not one of {', '.join(SOURCES)}")
        if self.split not in SPLITS:
            raise UserError(f"data.split={self.split!r} is not one of {', '.join(SPLITS)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise UserError(f"data.val_fraction={self.val_fraction} must be between 0 and 1 (e.g. 0.1)")
        if self.source in ("files", "hub") and not self.path:
            what = (
                "a file, glob or folder"
                if self.source == "files"
                else "a dataset id like roneneldan/TinyStories"
            )
            raise UserError(f"data.source={self.source} needs data.path=<{what}>")
        if self.max_documents is not None and int(self.max_documents) < 1:
            raise UserError(f"data.max_documents={self.max_documents} must be >= 1 or null")
        if self.num_proc is not None and int(self.num_proc) < 1:
            raise UserError(f"data.num_proc={self.num_proc} must be >= 1 or null")
        if self.source == "induction":
            if self.tokenizer != "ids":
                raise UserError("data.source=induction makes token ids directly: set data.tokenizer=ids")
            for k in (
                "induction_vocab",
                "induction_len",
                "induction_repeats",
                "induction_train_seqs",
                "induction_val_seqs",
            ):
                if int(getattr(self, k)) < 1:
                    raise UserError(f"data.{k}={getattr(self, k)} must be >= 1")
            if int(self.induction_repeats) < 2:
                raise UserError(
                    "data.induction_repeats must be >= 2 (a segment must repeat to be predictable)"
                )
            lo = self.induction_len_min
            if lo is not None and not 1 <= int(lo) <= int(self.induction_len):
                raise UserError(
                    f"data.induction_len_min={lo} must be between 1 and data.induction_len="
                    f"{self.induction_len}, or null for one fixed segment length"
                )
        elif self.tokenizer == "ids":
            raise UserError("data.tokenizer=ids is only for data.source=induction; use char or gpt2")
        name = str(self.name or "")
        if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", os.sep)):
            # data/prepared/<name>/ must stay inside data/prepared (never the code folder data/ itself)
            raise UserError(
                f"data.name={self.name!r} must be a plain folder name (no '/', not '.' or '..'): the prepared data "
                "goes to data/prepared/<name>/; use data.out_dir=<folder> to put it elsewhere"
            )

    @classmethod
    def from_dict(cls, d: Any) -> DataConfig:
        """Build from a dict or an OmegaConf node; unknown keys raise a UserError listing the valid ones."""
        if isinstance(d, DataConfig):
            return d
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(d, DictConfig):
                d = OmegaConf.to_container(d, resolve=True)
        except ImportError:  # pragma: no cover - hydra is a dependency
            pass
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise UserError(f"unknown data key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved_out_dir(self) -> Path:
        """The prepared folder: ``out_dir`` if set, else data/prepared/<name>/ inside this package."""
        return Path(self.out_dir).expanduser() if self.out_dir else PREPARED_ROOT / self.name

    def settings(self) -> dict:
        """The fields that change the prepared tokens (compared to decide whether to re-prepare)."""
        d = self.to_dict()
        for k in ("out_dir", "num_proc", "name"):
            d.pop(k)
        if self.source != "induction":
            for k in list(d):
                if k.startswith("induction_"):
                    d.pop(k)
        elif d.get("induction_len_min") is None:
            d.pop("induction_len_min")  # fixed length: same tokens as before the field existed
        if isinstance(d.get("path"), (list, tuple)):
            d["path"] = [str(p) for p in d["path"]]
        return d
