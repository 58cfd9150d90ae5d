"""Length extrapolation of saved runs: a tiny real GPT checkpoint, a small prepared corpus, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gptlab.sweep.extrapolate as ex
from gptlab.data import DataConfig, load_meta, prepare
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint

BLOCK = 16


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A char-level corpus prepared by data.prepare into a temporary folder."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "of", "a", "sword", "crown", "and", "to", "my", "lord"]
    text = "\n".join(" ".join(rng.choice(words, size=12)) for _ in range(600))
    (d / "c.txt").write_text(text)
    cfg = DataConfig(name="sweeptest", source="files", path=str(d / "c.txt"), out_dir=str(d / "prepared"))
    return cfg, prepare(cfg)


def save_run(run_dir, position: str, prepared, step=3):
    """A run directory with a best.pt of a randomly initialised tiny GPT (training is not needed here)."""
    dcfg, ddir = prepared
    meta = load_meta(ddir)
    torch.manual_seed(0)
    m = GPT(
        GPTConfig(
            vocab_size=meta["vocab_size"], block_size=BLOCK, n_layer=1, n_head=2, n_embd=32, position=position
        )
    )
    save_checkpoint(
        run_dir / "best.pt",
        model=m.state_dict(),
        model_config=m.config.to_dict(),
        step=step,
        config={"data": dcfg.to_dict()},
        tokenizer=meta,
    )
    return m.eval()


def val_tokens(prepared) -> np.ndarray:
    meta = load_meta(prepared[1])
    return np.fromfile(prepared[1] / "val.bin", dtype=meta["dtype"]).astype(np.int64)


def test_rope_run_evaluated_at_every_length_against_the_models_own_loss(tmp_path, prepared):
    m = save_run(tmp_path, "rope", prepared)
    res = ex.extrapolate_run(tmp_path, windows=4, device="cpu")
    assert (res["block_size"], res["position"], res["step"], res["windows"]) == (BLOCK, "rope", 3, 4)
    tokens = val_tokens(prepared)
    starts = ex.window_starts(len(tokens), 8 * BLOCK, 4)
    for r in res["results"]:
        L = BLOCK * r["multiplier"]
        # reference: the model's own loss (targets path), one window at a time, averaged
        with torch.no_grad():
            per_window = []
            for s in starts:
                x, y = torch.tensor(tokens[s : s + L])[None], torch.tensor(tokens[s + 1 : s + L + 1])[None]
                per_window.append(m(x, y)[1].item())
        ref = np.mean(per_window)
        assert r["length"] == L and r["reason"] is None
        assert r["loss"] == pytest.approx(ref, rel=1e-5)
    assert json.loads((tmp_path / "extrapolation.json").read_text()) == res


def test_learned_positions_not_applicable_past_block_size(tmp_path, prepared):
    m = save_run(tmp_path, "learned", prepared)
    with pytest.raises(UserError):  # the model really cannot take 2x: the n/a is not a guess
        m(torch.zeros(1, 2 * BLOCK, dtype=torch.long))
    res = ex.extrapolate_run(tmp_path, windows=2, device="cpu")
    losses = [r["loss"] for r in res["results"]]
    assert losses[0] is not None and losses[1:] == [None, None, None]
    assert "learned positions stop at block_size 16" in res["results"][1]["reason"]


def test_cache_reused_until_the_checkpoint_changes(tmp_path, prepared, monkeypatch):
    save_run(tmp_path, "alibi", prepared)
    first = ex.extrapolate_run(tmp_path, windows=3, device="cpu")

    def boom(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(ex, "evaluate_lengths", boom)
    assert ex.extrapolate_run(tmp_path, windows=3, device="cpu") == first  # cached
    assert ex.read_cache(tmp_path, windows=4) is None  # other settings: not valid
    save_run(tmp_path, "alibi", prepared, step=7)  # a new best.pt
    assert ex.read_cache(tmp_path, windows=3) is None
    with pytest.raises(AssertionError, match="evaluated again"):
        ex.extrapolate_run(tmp_path, windows=3, device="cpu")


def test_cli_prints_the_table_and_rejects_a_missing_run(tmp_path, prepared, capsys):
    m = save_run(tmp_path, "sinusoidal", prepared)
    ex.main([f"run={tmp_path}", "--windows", "2", "--multipliers", "1", "2", "--no-cache", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "sinusoidal, block_size 16, step 3" in out
    assert not (tmp_path / "extrapolation.json").exists()
    # the printed losses are the model's: each length's line ends in its loss, computed here independently
    tokens = val_tokens(prepared)
    starts = ex.window_starts(len(tokens), 2 * BLOCK, 2)
    printed = {
        int(line.split()[0]): float(line.split()[-1])
        for line in out.splitlines()
        if line.split()[0].isdigit()
    }
    assert set(printed) == {BLOCK, 2 * BLOCK}
    for L, loss in printed.items():
        with torch.no_grad():
            ref = np.mean(
                [m(torch.tensor(tokens[s : s + L])[None], torch.tensor(tokens[s + 1 : s + L + 1])[None])[1].item()
                 for s in starts]
            )  # fmt: skip
        assert loss == pytest.approx(ref, abs=6e-5)  # printed to 4 decimals
    with pytest.raises(SystemExit) as e:
        ex.main([str(tmp_path / "nope")])
    assert e.value.code == 2 and "no run directory or checkpoint" in capsys.readouterr().err


def test_window_loss_is_mean_cross_entropy_of_shifted_windows(prepared):
    """Independent of GPT: a constant-logit model's loss is -log softmax(c)[y], averaged over targets."""

    class Const(torch.nn.Module):
        max_seq_len = None

        def __init__(self, v):
            super().__init__()
            self.logits = torch.linspace(-1, 1, v)

        def forward(self, idx):
            return self.logits.expand(*idx.shape, -1), None

    tokens = val_tokens(prepared)
    v = int(tokens.max()) + 1
    starts = np.array([0, 5, 100])
    loss, n = ex.window_loss(Const(v), tokens, starts, 8, "cpu")
    logp = F.log_softmax(torch.linspace(-1, 1, v).double(), 0).numpy()
    ref = -np.mean([logp[tokens[s + 1 + i]] for s in starts for i in range(8)])
    assert n == 24 and loss == pytest.approx(ref, rel=1e-6)
