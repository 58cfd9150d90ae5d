"""Induction data with per-sequence segment lengths: structure, length spread, loader alignment, config, reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gptlab.data import BatchLoader, DataConfig, load_meta, prepare
from gptlab.data.induction import induction_splits, repeated_sequences, varied_sequences
from gptlab.errors import UserError

REPO = Path(__file__).resolve().parent.parent
LO, HI, K, V = 4, 12, 3, 200  # segment lengths 4..12, sequences of HI*K = 36 tokens


def cfg_for(tmp_path, **kw) -> DataConfig:
    base = dict(name="ind", source="induction", tokenizer="ids", induction_vocab=V, induction_len=HI,
                induction_len_min=LO, induction_repeats=K, induction_train_seqs=400, induction_val_seqs=40,
                out_dir=str(tmp_path))  # fmt: skip
    base.update(kw)
    return DataConfig(**base)


def min_period(row: np.ndarray) -> int:
    """Naive reference: the smallest p >= 1 with row[t] == row[t - p] for every t >= p."""
    for p in range(1, len(row)):
        if np.array_equal(row[p:], row[:-p]):
            return p
    return len(row)


def rows_of(ddir: Path, split: str) -> np.ndarray:
    meta = load_meta(ddir)
    flat = np.fromfile(ddir / f"{split}.bin", dtype=meta["dtype"]).astype(np.int64)
    return flat.reshape(-1, meta["sample_align"])


@pytest.fixture(scope="module")
def varied_dir(tmp_path_factory):
    return prepare(cfg_for(tmp_path_factory.mktemp("ind")), quiet=True)


def test_each_sequence_repeats_its_own_segment_length(varied_dir):
    meta = load_meta(varied_dir)
    assert meta["sample_align"] == HI * K and meta["train_tokens"] == 400 * HI * K
    rows = rows_of(varied_dir, "train")  # (400, 36)
    periods = np.array([min_period(r) for r in rows])
    assert periods.min() >= LO and periods.max() <= HI
    for r, p in zip(rows, periods):
        np.testing.assert_array_equal(r[p:], r[:-p])  # every token after the first copy = the token L_i back
        assert len(np.unique(r[:p])) >= p - 3  # the segment is random ids, not a shorter repeat
    counts = np.bincount(periods, minlength=HI + 1)[LO:]
    assert (counts > 0).all()  # every length in [LO, HI] occurs: L_i really varies
    assert counts.min() > 400 / 9 / 3  # and roughly uniformly (expected 44 each)
    val = rows_of(varied_dir, "val")
    assert {min_period(r) for r in val} <= set(range(LO, HI + 1)) and rows.max() < V


def test_varied_sequences_match_a_naive_construction():
    rows, lengths = varied_sequences(50, 3, 9, 40, 1000, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    want_len = rng.integers(3, 10, size=50)
    seg = rng.integers(0, 1000, size=(50, 9))
    np.testing.assert_array_equal(lengths, want_len)
    for i in range(50):
        naive = [int(seg[i, t % want_len[i]]) for t in range(40)]  # segment, repeated, last copy truncated
        assert rows[i].tolist() == naive
        assert min_period(rows[i]) == want_len[i]


def test_fixed_length_is_unchanged_when_min_is_null_or_equal(tmp_path):
    ss = np.random.SeedSequence(1337)
    train_rng, _ = (np.random.default_rng(s) for s in ss.spawn(2))
    want = np.tile(train_rng.integers(0, V, size=(400, HI)), (1, K)).reshape(-1)  # the original generator
    for lo in (None, HI):
        train, _ = induction_splits(cfg_for(tmp_path, induction_len_min=lo))
        np.testing.assert_array_equal(train, want)
    np.testing.assert_array_equal(
        repeated_sequences(2, 3, 2, 9, np.random.default_rng(1)),
        np.tile(np.random.default_rng(1).integers(0, 9, size=(2, 3)), (1, 2)),
    )


def test_loader_windows_start_at_sequence_boundaries(varied_dir):
    rows = rows_of(varied_dir, "train")
    S = HI * K
    loader = BatchLoader(varied_dir / "train.bin", block_size=S - 1, batch_size=16, seed=3)
    assert loader.align == S
    known = {tuple(r) for r in rows}
    for _ in range(3):
        x, y = loader.next()
        full = np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1)  # (16, S): the whole window
        for w in full:
            assert tuple(w) in known  # the window is exactly one sequence, from its first token
            p = min_period(w)
            assert LO <= p <= HI and np.array_equal(w[p:], w[:-p])
    short = BatchLoader(varied_dir / "train.bin", block_size=20, batch_size=8, seed=4)
    x, _ = short.next()
    assert all(any(tuple(w) == r[:20] for r in known) for w in x.numpy())  # prefixes of sequences


@pytest.mark.parametrize("lo", [0, -2, HI + 1])
def test_bad_min_length_is_one_clear_line(tmp_path, lo):
    with pytest.raises(
        UserError, match=rf"data.induction_len_min={lo} must be between 1 and data.induction_len=12"
    ) as e:
        cfg_for(tmp_path, induction_len_min=lo)
    assert "\n" not in str(e.value)


def test_prepare_notices_the_new_field(tmp_path):
    d = prepare(cfg_for(tmp_path, induction_len_min=None), quiet=True)
    fixed = rows_of(d, "train")
    assert {min_period(r) for r in fixed} == {HI}
    assert (
        "induction_len_min" not in load_meta(d)["settings"]
    )  # null: same settings as before the field existed
    d = prepare(cfg_for(tmp_path, induction_len_min=LO), quiet=True)
    assert load_meta(d)["settings"]["induction_len_min"] == LO
    assert len({min_period(r) for r in rows_of(d, "train")}) > 1  # re-prepared with varied lengths
    mtime = (d / "train.bin").stat().st_mtime_ns
    prepare(cfg_for(tmp_path, induction_len_min=LO), quiet=True)
    assert (d / "train.bin").stat().st_mtime_ns == mtime  # unchanged settings: nothing rewritten


def test_yaml_config_varies_lengths_by_default():
    d = yaml.safe_load((REPO / "configs" / "data" / "induction.yaml").read_text())
    cfg = DataConfig.from_dict(d)
    assert cfg.induction_len_min == 8 and cfg.induction_len == 32
    assert DataConfig().induction_len_min is None  # the dataclass keeps the fixed-length default
