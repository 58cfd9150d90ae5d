"""BatchLoader: windows match the token file, reproducible, resumable, rank-disjoint, aligned for induction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptlab.data import BatchLoader, DataConfig, load_meta, prepare
from gptlab.errors import UserError


@pytest.fixture(scope="module")
def ddir(tmp_path_factory):
    # a small char corpus: one play, so epochs are short and the tests cross epoch boundaries
    return prepare(DataConfig(max_documents=1, out_dir=str(tmp_path_factory.mktemp("d"))), quiet=True)


def tokens(path) -> np.ndarray:
    meta = load_meta(path.parent)
    return np.fromfile(path, dtype=meta["dtype"]).astype(np.int64)


def starts_of(x: torch.Tensor, data: np.ndarray, T: int) -> list[int]:
    """Find where each row of x sits in the token stream (rows are long enough to be unique)."""
    out = []
    windows = np.lib.stride_tricks.sliding_window_view(data, T)
    for row in x.numpy():
        hits = np.flatnonzero((windows == row).all(axis=1))
        assert len(hits) >= 1
        out.append(int(hits[0]))
    return out


def test_batches_are_windows_of_the_file_and_y_is_shifted(ddir):
    data = tokens(ddir / "val.bin")
    loader = BatchLoader(ddir / "val.bin", block_size=16, batch_size=4, seed=3)
    for _ in range(3):
        x, y = loader.next()
        assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
        for row_x, row_y, s in zip(x, y, starts_of(x, data, 16)):
            np.testing.assert_array_equal(row_x.numpy(), data[s : s + 16])
            np.testing.assert_array_equal(row_y.numpy(), data[s + 1 : s + 17])


def test_same_seed_same_stream_other_seed_other_stream(ddir):
    a = BatchLoader(ddir / "train.bin", 32, 8, seed=1)
    b = BatchLoader(ddir / "train.bin", 32, 8, seed=1)
    c = BatchLoader(ddir / "train.bin", 32, 8, seed=2)
    xa, xb, xc = (torch.cat([ld.next()[0] for _ in range(5)]) for ld in (a, b, c))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_one_epoch_reads_each_window_once(ddir):
    T, B = 64, 7
    loader = BatchLoader(ddir / "val.bin", T, B, seed=0)
    n = loader.n_windows
    steps = n // B
    starts = np.array(
        [s for _ in range(steps) for s in starts_of(loader.next()[0], tokens(ddir / "val.bin"), T)]
    )
    assert len(set(starts.tolist())) == steps * B  # no repeats within an epoch
    assert len(set((starts % T).tolist())) == 1  # one random shift per epoch, non-overlapping windows
    x_next_epoch = loader.next()[0]  # rolls over into epoch 1 with a new shift and permutation
    assert loader.epoch == 1 and not torch.equal(x_next_epoch, loader.fixed_batches(1)[0][0])


def test_resume_continues_the_identical_stream_across_epochs(ddir):
    ref = BatchLoader(ddir / "val.bin", 64, 12, seed=5)
    stream = [ref.next() for _ in range(40)]  # > 1 epoch of the val split
    assert ref.epoch >= 1
    a = BatchLoader(ddir / "val.bin", 64, 12, seed=5)
    for _ in range(17):
        a.next()
    sd = a.state_dict()
    b = BatchLoader(ddir / "val.bin", 64, 12, seed=5)
    b.load_state_dict(sd)
    for x_ref, y_ref in stream[17:]:
        x, y = b.next()
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_ranks_never_read_the_same_windows_and_together_equal_one_stream(ddir):
    T, B = 32, 4
    single = BatchLoader(ddir / "train.bin", T, 2 * B, seed=9)
    r0 = BatchLoader(ddir / "train.bin", T, B, seed=9, rank=0, world_size=2)
    r1 = BatchLoader(ddir / "train.bin", T, B, seed=9, rank=1, world_size=2)
    for _ in range(20):
        x, _ = single.next()
        x0, x1 = r0.next()[0], r1.next()[0]
        assert torch.equal(torch.cat([x0, x1]), x)  # rank r takes its slice of the global batch
        assert not any(torch.equal(a, b) for a in x0 for b in x1)
    # a run saved with 2 ranks resumes on 1 rank where the global stream left off
    one = BatchLoader(ddir / "train.bin", T, 2 * B, seed=9)
    one.load_state_dict(r0.state_dict())
    assert torch.equal(one.next()[0], single.next()[0])


def test_fixed_batches_are_the_stream_start_and_leave_state_alone(ddir):
    loader = BatchLoader(ddir / "val.bin", 16, 4, seed=11)
    loader.next()
    sd = loader.state_dict()
    fixed = loader.fixed_batches(3)
    assert loader.state_dict() == sd
    fresh = BatchLoader(ddir / "val.bin", 16, 4, seed=11)
    for x, y in fixed:
        fx, fy = fresh.next()
        assert torch.equal(x, fx) and torch.equal(y, fy)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(fixed, loader.fixed_batches(3)))


def test_aligned_windows_hold_the_induction_repeats(tmp_path):
    L, k = 8, 3
    d = prepare(DataConfig(name="ind", source="induction", tokenizer="ids", induction_vocab=100, induction_len=L,
                           induction_repeats=k, induction_train_seqs=200, induction_val_seqs=10,
                           out_dir=str(tmp_path)), quiet=True)  # fmt: skip
    loader = BatchLoader(d / "train.bin", block_size=L * k - 1, batch_size=16, seed=0)
    assert loader.align == L * k
    x, y = loader.next()
    np.testing.assert_array_equal(x[:, L:].numpy(), x[:, :-L].numpy())  # every token repeats L later
    np.testing.assert_array_equal(y[:, L - 1 :].numpy(), x[:, : x.shape[1] - L + 1].numpy())


def test_state_from_other_data_is_refused(ddir):
    a = BatchLoader(ddir / "train.bin", 32, 4)
    b = BatchLoader(ddir / "train.bin", 64, 4)
    with pytest.raises(UserError, match="block_size=32 but this run has block_size=64"):
        b.load_state_dict(a.state_dict())


def test_too_small_data_and_bad_rank_fail_clearly(ddir):
    with pytest.raises(UserError, match="fewer than batch_size\\*world_size"):
        BatchLoader(ddir / "val.bin", 4096, 64)
    with pytest.raises(UserError, match="rank 2 must be in"):
        BatchLoader(ddir / "val.bin", 16, 4, rank=2, world_size=2)
    with pytest.raises(UserError, match="prepare the data first"):
        BatchLoader(ddir / "nope" / "train.bin", 16, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_equal_cpu_batches(ddir):
    """On CUDA the batch is copied from pinned memory without blocking; it equals the CPU batch."""
    a = BatchLoader(ddir / "val.bin", 16, 4, seed=1, device="cuda")
    b = BatchLoader(ddir / "val.bin", 16, 4, seed=1)
    x, y = a.next()
    torch.cuda.synchronize()
    assert x.is_cuda and torch.equal(x.cpu(), b.next()[0])
