"""data/: the prepared folder is checked whole, only this tool's temporaries are removed, names stay inside
data/prepared, and token ids outside the vocabulary are one line (issue 19: 19.2, 19.3, 19.4, 19.5, 19.13)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptlab.data import BatchLoader, DataConfig, build, check_token_ids, integrity, load_meta, prepare
from gptlab.data.config import PREPARED_ROOT
from gptlab.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """The whole embedded corpus, char tokens: train.bin is ~2 MB, so 64 blocks of 4 KiB leave gaps."""
    out = tmp_path_factory.mktemp("integrity") / "chars"
    prepare(DataConfig(out_dir=str(out)), quiet=True)
    return out


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def sampled_offsets(size: int) -> list[int]:
    """Where the old fingerprint read its 64 blocks of 4 KiB (written out here, independent of the code)."""
    return [(size - 4096) * i // 63 for i in range(64)]


def zero_between_samples(f: Path) -> tuple[int, int]:
    size = f.stat().st_size
    offs = sampled_offsets(size)
    lo, hi = offs[30] + 4096, offs[31]  # a gap between two sampled blocks
    assert hi - lo > 8192, "the file is too small to leave gaps between the sampled blocks"
    with open(f, "r+b") as fh:
        fh.seek(lo)
        fh.write(bytes(hi - lo))
    return lo, hi


def test_a_region_the_old_fingerprint_never_read_is_caught(big, tmp_path, capsys):
    d = copy_of(big, tmp_path / "d")
    good = (d / "train.bin").read_bytes()
    before = integrity.legacy_fingerprint(d / "train.bin")
    lo, hi = zero_between_samples(d / "train.bin")
    assert (d / "train.bin").read_bytes()[lo:hi] != good[lo:hi]  # really damaged
    assert integrity.legacy_fingerprint(d / "train.bin") == before  # ... where the old check never looked
    # the loader refuses it in one line that says to prepare again
    with pytest.raises(UserError, match=r"does not match the checksum .*prepare the data again") as e:
        BatchLoader(d / "train.bin", block_size=16, batch_size=2)
    assert "\n" not in str(e.value)
    # the start of a training run (prepare) sees it and prepares the folder again
    meta, why = build.check_prepared(d)
    assert meta is None and "train.bin does not match its checksum" in why
    prepare(DataConfig(out_dir=str(d)))
    assert "again: train.bin does not match" in capsys.readouterr().err
    assert (d / "train.bin").read_bytes() == good


def test_the_checksum_is_sha256_of_every_byte(big):
    meta = load_meta(big)
    for split in ("train", "val"):
        digest = hashlib.sha256((big / f"{split}.bin").read_bytes()).hexdigest()
        assert meta["fingerprints"][split] == "sha256:" + digest


def test_a_file_verified_long_ago_is_checked_again_once_written(big, tmp_path):
    d = copy_of(big, tmp_path / "d")
    f = d / "train.bin"
    old = f.stat().st_mtime - 3600
    os.utime(f, (old, old))  # unchanged for an hour: verified once, then remembered
    BatchLoader(f, block_size=16, batch_size=2)
    key = next(k for k in integrity._verified if k[0] == os.path.realpath(f))
    assert key[4] == f.stat().st_mtime_ns
    zero_between_samples(f)
    with pytest.raises(UserError, match="does not match the checksum"):
        BatchLoader(f, block_size=16, batch_size=2)


def test_forget_verified_makes_the_next_check_read_the_file_again(big, tmp_path, monkeypatch):
    d = copy_of(big, tmp_path / "d")
    f = d / "train.bin"
    old = f.stat().st_mtime - 3600
    os.utime(f, (old, old))
    expected = load_meta(d)["fingerprints"]["train"]
    hashed = []
    real = integrity.file_checksum
    monkeypatch.setattr(integrity, "file_checksum", lambda p: hashed.append(p) or real(p))
    assert integrity.matches(f, expected) and integrity.matches(f, expected)
    assert len(hashed) == 1  # remembered after the first check
    integrity.forget_verified()
    assert integrity.matches(f, expected) and len(hashed) == 2


def test_folders_with_the_old_sampled_fingerprint_are_upgraded_without_tokenizing(big, tmp_path):
    d = copy_of(big, tmp_path / "d")
    meta = load_meta(d)
    legacy = {s: integrity.legacy_fingerprint(d / f"{s}.bin") for s in ("train", "val")}
    build._write_meta(d, {**{k: v for k, v in meta.items() if k != "meta_sha256"}, "fingerprints": legacy})
    mtime = (d / "train.bin").stat().st_mtime_ns
    assert prepare(DataConfig(out_dir=str(d)), quiet=True) == d
    assert (d / "train.bin").stat().st_mtime_ns == mtime  # not prepared again
    assert load_meta(d)["fingerprints"] == meta["fingerprints"]  # whole-file checksums recorded


# ---------------------------------------------------------------------------------------------- 19.5 token ids
def test_check_token_ids_refuses_ids_outside_the_vocabulary_in_one_line():
    check_token_ids(np.array([0, 5, 64], dtype=np.uint16), 65, "x/train.bin")  # all inside: nothing
    check_token_ids(np.array([], dtype=np.uint16), 65, "x/train.bin")
    for ids, bad in (
        (np.array([3, 65, 2], dtype=np.uint16), 65),
        (np.array([[1, 2], [70000, 0]], dtype=np.uint32), 70000),
        (np.array([1, -1]), -1),
    ):
        with pytest.raises(
            UserError, match=rf"x/train.bin holds token id {bad}, outside the vocabulary of 65"
        ):
            check_token_ids(ids, 65, "x/train.bin")


def test_the_loader_checks_ids_even_in_a_file_whose_checksum_matches(tmp_path):
    out = tmp_path / "d"
    prepare(DataConfig(out_dir=str(out), max_documents=2), quiet=True)
    ids = np.memmap(out / "train.bin", dtype=np.uint16, mode="r+")
    ids[:] = 60000  # beyond the 60-odd characters of the vocabulary
    ids.flush()
    del ids
    meta = load_meta(out)  # a writer that recorded the damaged file's own checksum
    sums = build._checksums(out / "train.bin", out / "val.bin")
    build._write_meta(out, {**{k: v for k, v in meta.items() if k != "meta_sha256"}, "fingerprints": sums})
    loader = BatchLoader(out / "train.bin", block_size=16, batch_size=2)
    with pytest.raises(UserError, match="token id 60000, outside the vocabulary .* damaged; delete"):
        loader.next()


# ---------------------------------------------------------------------------------------------- 19.2 temporaries
def test_only_this_tool_s_own_temporaries_are_removed(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    users = {".notes.tmp": b"my notes", ".backup.txt.tmp": b"keep", ".tmp-prepare-mine": None}
    for name, body in users.items():
        (out / name).mkdir() if body is None else (out / name).write_bytes(body)
    cfg = DataConfig(out_dir=str(out), max_documents=2)
    prepare(cfg, quiet=True)
    # what a killed prepare of ours leaves: its work folder and meta.json's atomic-write temporary
    (out / f"{build.WORK_PREFIX}dead").mkdir()
    (out / f"{build.WORK_PREFIX}dead" / "train.bin").write_bytes(b"x" * 1000)
    (out / ".meta.json.k1ll3d.tmp").write_text("{")
    (out / "train.bin").write_bytes(b"")  # damaged: the next prepare takes the lock and cleans up
    prepare(cfg, quiet=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([".gptlab-data", "meta.json", "train.bin", "val.bin", *users])
    assert (out / ".notes.tmp").read_bytes() == b"my notes" and (
        out / ".backup.txt.tmp"
    ).read_bytes() == b"keep"


# ---------------------------------------------------------------------------------------------- 19.3 names
@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "a\\b", ""])
def test_names_that_leave_data_prepared_are_refused(name):
    with pytest.raises(UserError, match="must be a plain folder name") as e:
        DataConfig(name=name)
    assert "\n" not in str(e.value)


def test_data_name_dotdot_on_the_command_line_writes_nothing_into_the_code_folder():
    code = PREPARED_ROOT.parent
    before = sorted(p.name for p in code.iterdir())
    r = subprocess.run(
        [sys.executable, "-m", "data", "data.name=.."], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: data.name='..' must be a plain folder name (no '/', not '.' or '..'): the prepared data goes to "
        "data/prepared/<name>/; use data.out_dir=<folder> to put it elsewhere"
    ]
    assert sorted(p.name for p in code.iterdir()) == before
    assert not any((code / n).exists() for n in ("train.bin", "val.bin", "meta.json"))


# ---------------------------------------------------------------------------------------------- 19.13 one line
def test_a_val_bin_that_is_a_folder_is_one_line_and_left_alone(tmp_path):
    out = tmp_path / "d"
    cfg = DataConfig(out_dir=str(out), max_documents=2)
    prepare(cfg, quiet=True)
    (out / "val.bin").unlink()
    (out / "val.bin").mkdir()
    (out / "val.bin" / "mine.txt").write_text("keep")
    with pytest.raises(
        UserError, match=r"val.bin is a folder where the prepared data keeps a file; move it away"
    ):
        prepare(cfg, quiet=True)
    assert (out / "val.bin" / "mine.txt").read_text() == "keep"
    with pytest.raises(UserError, match="does not exist"):  # the loader: one line too
        BatchLoader(out / "val.bin", block_size=16, batch_size=2)


def test_data_out_dir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "README.md"
    f.write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "data", f"data.out_dir={f}"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: data.out_dir={f} is a file; pass a folder (new or empty) to write into"
    ]
    assert f.read_text() == "mine"
