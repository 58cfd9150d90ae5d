"""data/: every bad input gives one clear UserError line and leaves nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptlab.data import DataConfig, load_meta, prepare
from gptlab.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def files_cfg(path, out, **kw) -> DataConfig:
    return DataConfig(name="f", source="files", path=path, out_dir=str(out), **{"tokenizer": "char", **kw})


def fails(cfg, match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        prepare(cfg, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg
    out = Path(cfg.out_dir)
    assert not out.exists() or not any(p.name.startswith(".tmp") for p in out.iterdir())  # no leftovers
    return msg


@pytest.fixture
def good(tmp_path) -> Path:
    f = tmp_path / "good.txt"
    f.write_text("To be, or not to be, that is the question.\n" * 20)
    return f


def test_missing_path_and_empty_glob_and_empty_folder(tmp_path):
    out = tmp_path / "out"
    fails(files_cfg(tmp_path / "nope.txt", out), "does not exist")
    fails(files_cfg(tmp_path / "*.md", out), "no files match")
    (tmp_path / "empty_dir").mkdir()
    fails(files_cfg(tmp_path / "empty_dir", out), "holds no files")
    assert not out.exists()


def test_empty_binary_and_non_utf8_files(tmp_path, good):
    out = tmp_path / "out"
    (tmp_path / "empty.txt").write_text("  \n")
    fails(files_cfg([good, tmp_path / "empty.txt"], out), "empty.txt is empty")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    fails(files_cfg([good, tmp_path / "blob.bin"], out), "blob.bin looks binary")
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    fails(
        files_cfg([good, tmp_path / "latin1.txt"], out),
        "latin1.txt is not UTF-8 text \\(byte 0xe9 at offset 3\\)",
    )
    assert not out.exists()


def test_corpus_too_small(tmp_path):
    (tmp_path / "tiny.txt").write_text("Hi there.")
    fails(files_cfg(tmp_path / "tiny.txt", tmp_path / "out"), "corpus is too small")
    assert not (tmp_path / "out").exists()


def test_failed_reprepare_keeps_the_old_data(tmp_path, good):
    out = tmp_path / "out"
    d = prepare(files_cfg(good, out), quiet=True)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    good.write_bytes(b"\xff\xfe broken now")
    fails(files_cfg(good, out), "not UTF-8")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_prepared_folder_from_another_tokenizer(tmp_path, good):
    prepare(files_cfg(good, tmp_path / "out"), quiet=True)
    msg = fails(
        files_cfg(good, tmp_path / "out", tokenizer="gpt2"), "holds data prepared with tokenizer char"
    )
    assert "data.out_dir" in msg


def test_unknown_tokenizer_before_reading_data(tmp_path, good):
    msg = fails(
        files_cfg(good, tmp_path / "out", tokenizer="gpt3"), "unknown tokenizer 'gpt3'; choose one of"
    )
    assert "char, gpt2" in msg and not (tmp_path / "out").exists()


def test_bad_config_values():
    with pytest.raises(UserError, match="data.source='web' is not one of embedded, files, hub, induction"):
        DataConfig(source="web")
    with pytest.raises(UserError, match="needs data.path"):
        DataConfig(source="files")
    with pytest.raises(UserError, match="val_fraction=1.5"):
        DataConfig(val_fraction=1.5)
    with pytest.raises(UserError, match="unknown data key\\(s\\) tokeniser; valid keys: name, source"):
        DataConfig.from_dict({"tokeniser": "gpt2"})


def test_hub_offline_fails_fast_in_one_line(tmp_path, monkeypatch):
    cfg = DataConfig(
        name="h", source="hub", path="roneneldan/TinyStories", tokenizer="gpt2", out_dir=str(tmp_path / "o")
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    fails(cfg, "could not load dataset 'roneneldan/TinyStories' \\(offline")
    # without the offline variables: a quick reachability probe, not datasets' ~23 s of retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    from gptlab.data import sources

    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: False)
    fails(cfg, "cannot reach the Hugging Face hub to load 'roneneldan/TinyStories'")


def test_hub_missing_text_column_lists_columns(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.jsonl").write_text('{"story": "a b c"}\n' * 5)
    cfg = DataConfig(name="h", source="hub", path=str(src), text_column="text", out_dir=str(tmp_path / "o"))
    fails(cfg, "has no column 'text'; set data.text_column to one of \\['story'\\]")


def test_modified_embedded_corpus_is_refused(tmp_path, monkeypatch):
    from gptlab.data import corpus

    copy = tmp_path / "shakespeare.jsonl.gz"
    raw = bytearray(corpus.CORPUS_FILE.read_bytes())
    raw[-20] ^= 1
    copy.write_bytes(bytes(raw))
    monkeypatch.setattr(corpus, "CORPUS_FILE", copy)
    with pytest.raises(UserError, match="embedded corpus shakespeare.jsonl.gz was modified"):
        corpus.embedded_documents()
    monkeypatch.setattr(corpus, "CORPUS_FILE", tmp_path / "gone.gz")
    with pytest.raises(UserError, match="is missing"):
        corpus.embedded_documents()


def test_load_meta_of_a_non_prepared_folder(tmp_path):
    with pytest.raises(UserError, match="not a prepared data folder"):
        load_meta(tmp_path)


def test_cli_unknown_data_config_and_override(tmp_path, good):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "data", "data=shakspeare"], cwd=REPO, env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2
    assert (
        r.stderr.strip().splitlines()[-1].startswith("error: unknown data config 'shakspeare'; choose one of")
    )
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "data", "data=text_files", f"data.path={good}",
                        f"data.out_dir={out}", "data.tokenizer=gpt2"], cwd=REPO, env=env, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = load_meta(out)
    assert meta["tokenizer"] == "gpt2" and meta["name"] == "text_files"
    ids = np.fromfile(out / "train.bin", dtype=np.uint16)
    assert ids[:3].tolist() == [2514, 307, 11]  # "To", " be", ","
