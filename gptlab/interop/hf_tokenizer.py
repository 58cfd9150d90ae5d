"""Tokenizers across the border: ours as Hugging Face tokenizer.json files, and an HF directory's as ours.

Export: ``gpt2`` becomes a byte-level BPE tokenizer.json built from the shipped rank file (vocabulary by the
GPT-2 byte-to-unicode map, merges recovered from the ranks; the same ids as tiktoken), ``char`` a word-level
tokenizer with one token per character, ``ids`` one token per integer, and ``hf`` is written back as it
came. Import: an HF directory whose tokenizer gives GPT-2's ids on a probe text is read with the project's
offline gpt2 tokenizer (so its runs match data prepared with ``tokenizer: gpt2``); any other tokenizer.json
(Llama, SmolLM, ...) is stored whole in the run's meta (``tokenizer: hf``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from gptlab.data.tokenizers import (
    ENDOFTEXT,
    HFTokenizer,
    configured_eos_id,
    get_tokenizer,
    gpt2_encoding,
    hf_tokenizer_meta_from_text,
)
from gptlab.errors import UserError
from gptlab.rundir.files import read_json, write_json

GPT2_VOCAB = 50257
GPT2_META = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB, "eot_id": 50256}
# The files a Hugging Face tokenizer may be saved as (fast: tokenizer.json; slow: the others).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
# Text that separates BPE tokenizers: contractions, digits, runs of spaces, tabs, newlines, accents, CJK, emoji.
PROBE = (
    "Hello world! It's 3.14159 -- they'll say 'naïve café' 日本語 🙂\n\n\tindented   twice\r\n"
    "ROMEO: But, soft! what light through yonder window breaks? 1234567 $x_{2}$"
)


# ------------------------------------------------------------------------------------------ gpt2 -> HF
@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (Radford et al. 2019).

    Bytes that are printable Latin-1 characters map to themselves; the others (control characters, space,
    a few more) map to code points 256, 257, ... in byte order, so no token contains whitespace or control
    characters.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts whose merge makes ``token``: byte-pair encode it with the merges ranked below ``rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    if len(parts) != 2:
        raise ValueError(f"rank {rank} is not a merge of two tokens")
    return parts[0], parts[1]


@functools.cache
def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocab.json and merges.txt content, derived from the shipped tiktoken rank file."""
    ranks = gpt2_encoding()._mergeable_ranks
    b2u = byte_to_unicode()

    def show(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {show(tok): r for tok, r in ranks.items()}
    vocab[ENDOFTEXT] = 50256
    merges = [(r, _merge_of(tok, r, ranks)) for tok, r in ranks.items() if len(tok) > 1]
    merges.sort()
    return vocab, [(show(a), show(b)) for _, (a, b) in merges]


def gpt2_tokenizer_json() -> str:
    """A tokenizer.json that tokenizes as tiktoken's gpt2 (byte-level BPE, GPT-2's pre-tokenizer)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab, merges = gpt2_vocab_and_merges()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    return tok.to_str()


def char_tokenizer_json(chars: str) -> str:
    """One token per character, the ids of our char tokenizer; decoding joins them with nothing between."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=chars[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok.to_str()


def ids_tokenizer_json(vocab_size: int) -> str:
    """Space-separated integer ids (the ``ids`` tokenizer of synthetic data)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={str(i): i for i in range(vocab_size)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


def tokenizer_json_for(meta: dict) -> str | None:
    """The tokenizer.json text for a run's tokenizer meta, or None for a tokenizer with no HF form here."""
    name = meta.get("tokenizer")
    if name == "gpt2":
        return gpt2_tokenizer_json()
    if name == "char":
        return char_tokenizer_json(meta["chars"])
    if name == "ids":
        return ids_tokenizer_json(int(meta["vocab_size"]))
    if name == "hf":
        return meta["hf_tokenizer"]
    return None


def hf_tokenizer_object(meta: dict, max_length: int):
    """A ``transformers.PreTrainedTokenizerFast`` for a run's tokenizer meta (None if it has no HF form)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    text = tokenizer_json_for(meta)
    if text is None:
        return None
    backend = Tokenizer.from_str(text)
    eot = meta.get("eot_id")
    eot_token = backend.id_to_token(int(eot)) if eot is not None else None
    gpt2 = meta.get("tokenizer") == "gpt2"
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=eot_token if gpt2 else None,  # GPT-2 starts texts with <|endoftext|>; others: unknown here
        eos_token=eot_token,
        unk_token=ENDOFTEXT if gpt2 else None,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,  # our decode never rewrites spaces
    )


def save_tokenizer(meta: dict, out: Path, max_length: int) -> bool:
    """Write the tokenizer files of a run's tokenizer into ``out``; False when it has no HF form."""
    tok = hf_tokenizer_object(meta, max_length)
    if tok is None:
        return False
    tok.save_pretrained(str(out))
    # name the class every transformers version knows (v5 writes its own "TokenizersBackend")
    f = out / "tokenizer_config.json"
    write_json(f, {**read_json(f, {}), "tokenizer_class": "PreTrainedTokenizerFast"})
    return True


# ------------------------------------------------------------------------------------------ HF -> ours
def _tokenizer_text(local: Path) -> str | None:
    """tokenizer.json of an HF directory, converted from slow-tokenizer files if needed; None if none."""
    f = local / "tokenizer.json"
    if f.is_file():
        return f.read_text(encoding="utf-8")
    if not any((local / n).is_file() for n in ("vocab.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(local))
    except Exception as e:  # a broken or foreign tokenizer: say which and why
        raise UserError(
            f"{local}: its tokenizer files cannot be read ({type(e).__name__}: {str(e)[:100]})"
        ) from None
    backend = getattr(tok, "backend_tokenizer", None)
    return backend.to_str() if backend is not None else None


def is_gpt2_bpe(text: str) -> bool:
    """Whether a tokenizer.json gives exactly GPT-2's vocabulary size and ids (probe text, both directions)."""
    try:
        theirs = HFTokenizer(text)
    except UserError:
        return False
    ours = get_tokenizer("gpt2")
    ids = ours.encode_ordinary(PROBE)
    return theirs.vocab_size == GPT2_VOCAB and theirs.encode(PROBE) == ids and theirs.decode(ids) == PROBE


def _eos_id(local: Path, hf_config: dict, text: str) -> int | None:
    """The end-of-text id: tokenizer_config.json's eos_token, else config.json's eos_token_id."""
    found = configured_eos_id(local, text)
    if found is not None:
        return found
    eid = hf_config.get("eos_token_id")
    if isinstance(eid, list):
        eid = eid[0] if eid else None
    return int(eid) if isinstance(eid, int) else None


def tokenizer_meta_for(local: Path, hf_config: dict, source: str) -> dict:
    """The tokenizer meta of an HF directory: gpt2 where it tokenizes as GPT-2, else its tokenizer.json whole."""
    text = _tokenizer_text(local)
    if text is None:
        if hf_config.get("model_type") == "gpt2" and hf_config.get("vocab_size") in (GPT2_VOCAB, 50304):
            return dict(GPT2_META)  # GPT-2's own vocabulary size and no tokenizer files: GPT-2's BPE
        raise UserError(
            f"{source} has no tokenizer files (tokenizer.json); gptlab reads GPT-2's BPE for gpt2 models of "
            f"vocabulary {GPT2_VOCAB}, or any Hugging Face tokenizer.json saved in the directory"
        )
    if is_gpt2_bpe(text):
        return dict(GPT2_META)
    return hf_tokenizer_meta_from_text(text, _eos_id(local, hf_config, text), f"{source} (tokenizer.json)")
