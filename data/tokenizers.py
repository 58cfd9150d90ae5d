"""Tokenizers: ``char`` (vocabulary from the corpus), ``gpt2`` (tiktoken, offline from a shipped rank file),
any other tiktoken encoding, ``ids`` (space-separated integers, for synthetic data), and ``hf``: a Hugging Face
``tokenizer.json`` (a pretrained Llama-family model's own tokenizer), named by its path and stored whole in
``meta``.

All share one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``,
``eot_id`` (end-of-text id or None) and ``name``. ``get_tokenizer(meta)`` rebuilds one from a prepared
folder's ``meta.json`` dict alone, with no network.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

import numpy as np

from gptlab.errors import UserError
from gptlab.rundir.files import read_json

GPT2_RANKS = Path(__file__).resolve().parent / "tokenizers" / "gpt2.tiktoken"
# tiktoken's own expected hash for the r50k_base / gpt2 ranks (tiktoken_ext/openai_public.py).
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# The GPT-2 pre-tokenizer pattern, as in tiktoken releases before possessive quantifiers were added.
_R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


def tokenizer_choices() -> list[str]:
    """Every name ``tokenizer=`` accepts (besides a path to a tokenizer.json, see :func:`is_tokenizer_path`)."""
    try:
        import tiktoken

        others = [n for n in tiktoken.list_encoding_names() if n != "gpt2"]
    except ImportError:  # pragma: no cover - tiktoken is a dependency
        others = []
    return ["char", "gpt2", *others]


def is_tokenizer_path(value) -> bool:
    """Whether a ``tokenizer=`` value names a Hugging Face tokenizer.json (a file, or a folder holding one)."""
    return isinstance(value, str) and (
        "/" in value or value.endswith(".json") or value.startswith(("~", "."))
    )


def tokenizer_label(value: str) -> str:
    """The ``meta["tokenizer"]`` a ``tokenizer=`` value prepares: the name itself, or "hf" for a path."""
    return "hf" if is_tokenizer_path(value) else value


class CharTokenizer:
    """One id per character; the vocabulary is the sorted set of characters of the corpus. No end-of-text."""

    name = "char"
    eot_id = None

    def __init__(self, chars: str | list[str]):
        self.chars = "".join(chars)
        if not self.chars:
            raise UserError("the char vocabulary is empty: the corpus has no text")
        self.vocab_size = len(self.chars)
        cps = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        self._lut = np.full(int(cps.max()) + 1, -1, dtype=np.int64)  # code point -> id, -1 = unknown
        self._lut[cps] = np.arange(len(cps))

    def encode_array(self, text: str) -> np.ndarray:
        """Ids as an int64 array; raises UserError naming the characters the vocabulary lacks."""
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ok = cps < len(self._lut)
        ids = np.full(len(cps), -1, dtype=np.int64)
        ids[ok] = self._lut[cps[ok]]
        if (ids < 0).any():
            bad = sorted({chr(c) for c in cps[ids < 0][:1000]})
            shown = "".join(repr(c)[1:-1] for c in bad[:10])
            raise UserError(
                f"the char vocabulary ({self.vocab_size} characters) lacks {len(bad)} character(s) "
                f"of the text, e.g. '{shown}'; remove them or train on data that contains them"
            )
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


class TiktokenTokenizer:
    """A tiktoken Encoding; ``encode`` accepts the literal <|endoftext|> as the special token."""

    def __init__(self, enc):
        self.enc = enc
        self.name = enc.name
        self.vocab_size = enc.n_vocab
        self.eot_id = enc.eot_token if ENDOFTEXT in enc.special_tokens_set else None

    def encode(self, text: str) -> list[int]:
        return self.enc.encode(text, allowed_special={ENDOFTEXT} & self.enc.special_tokens_set)

    def encode_ordinary(self, text: str) -> list[int]:
        """Plain text only (a literal '<|endoftext|>' in the text stays text): what preparation uses."""
        return self.enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])


class IdsTokenizer:
    """Synthetic data: text is space-separated integer ids ("3 17 3 17")."""

    name = "ids"
    eot_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> list[int]:
        try:
            ids = [int(t) for t in text.split()]
        except ValueError:
            raise UserError(f"the ids tokenizer reads space-separated integers, got {text[:40]!r}") from None
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise UserError(f"ids must be in [0, {self.vocab_size}), got {text[:40]!r}")
        return ids

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer, rebuilt offline from its tokenizer.json text.

    ``encode`` adds no special tokens (no BOS): prepared data and prompts are tokenized alike, and documents
    end with ``eot_id`` as for gpt2. Needs the ``tokenizers`` package (the ``hf`` extra).
    """

    name = "hf"

    def __init__(self, json_text: str, eot_id: int | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UserError(
                "this tokenizer is a Hugging Face tokenizer.json, which needs the tokenizers package: "
                "pip install -e '.[hf]'"
            ) from None
        try:
            self.tok = Tokenizer.from_str(json_text)
        except Exception as e:  # the Rust side raises its own Exception type for malformed JSON
            raise UserError(f"the Hugging Face tokenizer.json cannot be read ({str(e)[:120]})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.eot_id = None if eot_id is None else int(eot_id)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    encode_ordinary = encode  # what preparation calls

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def special_token(value) -> str | None:
    """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_tokenizer_meta(path: str | Path, eot_id: int | None = None) -> dict:
    """The meta entries of a Hugging Face tokenizer.json (a file, or a folder holding one), read locally.

    The JSON is stored whole (``hf_tokenizer``), so a run rebuilds its tokenizer offline from its checkpoint
    alone; the path is kept only to be shown. The end-of-text id is ``eot_id`` if given, else the
    ``eos_token`` of a tokenizer_config.json beside the file.
    """
    f, text = read_tokenizer_json(path)
    if eot_id is None:
        eot_id = configured_eos_id(f.parent, text)
    return hf_tokenizer_meta_from_text(text, eot_id, str(f))


def configured_eos_id(folder: Path, text: str) -> int | None:
    """The id of the ``eos_token`` that a tokenizer_config.json in ``folder`` names (None if none or unknown)."""
    eos = special_token(read_json(folder / "tokenizer_config.json", {}).get("eos_token"))
    return HFTokenizer(text).tok.token_to_id(eos) if eos else None


def hf_tokenizer_meta_from_text(text: str, eot_id: int | None, source: str) -> dict:
    """The meta entries of a tokenizer.json's text (``source`` says where it came from, for display only)."""
    tok = HFTokenizer(text, eot_id)
    return {
        "tokenizer": "hf",
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "hf_tokenizer": text,
        "hf_tokenizer_sha256": text_sha256(text),
        "hf_tokenizer_path": source,
    }


def read_tokenizer_json(path: str | Path) -> tuple[Path, str]:
    """(the file, its text) of a tokenizer.json named directly or by the folder holding it."""
    p = Path(path).expanduser()
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise UserError(
            f"tokenizer={path}: no tokenizer.json there; give a Hugging Face tokenizer.json or a folder holding "
            "one (AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes it)"
        )
    try:
        return f, f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"tokenizer={path}: {f} cannot be read ({e})") from None


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    """Parse a tiktoken rank file ("<base64 token> <rank>" per line) after checking its sha256.

    Parsed here rather than with tiktoken.load.load_tiktoken_bpe, which copies local files into a cache folder.
    """
    if not path.is_file():
        raise UserError(
            f"the gpt2 rank file {path} is missing; restore it from the repository (git checkout)"
        )
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise UserError(
            f"{path} has sha256 {digest[:12]}…, expected {expected_sha256[:12]}…; restore it from git"
        )
    ranks = {}
    for line in raw.splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


@functools.cache
def gpt2_encoding():
    """tiktoken's gpt2 Encoding built from the shipped rank file: same ids as tiktoken.get_encoding("gpt2")."""
    import tiktoken

    try:
        from tiktoken_ext.openai_public import r50k_pat_str as pat
    except ImportError:  # older tiktoken
        pat = _R50K_PAT
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=pat,
        mergeable_ranks=_read_ranks(GPT2_RANKS, GPT2_RANKS_SHA256),
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


@functools.cache
def _tiktoken_encoding(name: str):
    import tiktoken

    if name == "gpt2":
        return gpt2_encoding()
    if name not in tiktoken.list_encoding_names():
        raise UserError(f"unknown tokenizer {name!r}; choose one of {', '.join(tokenizer_choices())}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # network errors come in many types (requests, urllib3, OSError)
        raise UserError(
            f"could not load tiktoken encoding {name!r} ({type(e).__name__}): it is downloaded on first use; "
            "connect once, or use tokenizer=gpt2 or char, which work offline"
        ) from None


def get_tokenizer(meta: dict | str):
    """A tokenizer from a prepared folder's meta dict (or a tokenizer name for tiktoken/gpt2, or the path of a
    tokenizer.json). Works offline."""
    if isinstance(meta, str):
        meta = hf_tokenizer_meta(meta) if is_tokenizer_path(meta) else {"tokenizer": meta}
    name = meta.get("tokenizer")
    if name == "hf":
        if not isinstance(meta.get("hf_tokenizer"), str):
            raise UserError("an hf tokenizer needs its tokenizer.json text in meta['hf_tokenizer']")
        return HFTokenizer(meta["hf_tokenizer"], meta.get("eot_id"))
    if name == "char":
        if "chars" not in meta:
            raise UserError(
                "a char tokenizer needs its vocabulary: pass the prepared folder's meta.json dict"
            )
        return CharTokenizer(meta["chars"])
    if name == "ids":
        return IdsTokenizer(meta["vocab_size"])
    if not isinstance(name, str) or not name:
        raise UserError(f"no tokenizer name in {meta!r:.80}; choose one of {', '.join(tokenizer_choices())}")
    return TiktokenTokenizer(_tiktoken_encoding(name))
