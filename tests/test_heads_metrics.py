"""Head metrics against hand-built ideal patterns and a naive loop reference."""

import math

import pytest
import torch

from gptlab.interp import metrics as M
from gptlab.interp.probe import probe_seg_len, probe_seg_lens, repeated_random_tokens

T = 33  # 1 first token + a 16-token segment twice
B = 3


def _uniform(T):
    """Uniform causal attention: A[i, j] = 1/(i+1) for j <= i."""
    a = torch.tril(torch.ones(T, T))
    return a / a.sum(-1, keepdim=True)


def _stack(rows_fn, B=B):
    """(B, 1, T, T) pattern from a per-batch builder."""
    return torch.stack([rows_fn(b) for b in range(B)])[:, None]


def _prev_pattern(T):
    a = torch.zeros(T, T)
    a[0, 0] = 1
    a[torch.arange(1, T), torch.arange(0, T - 1)] = 1
    return a


def _sink_pattern(T):
    a = torch.zeros(T, T)
    a[:, 0] = 1
    return a


def _induction_pattern(T, P):
    """Ideal induction head on [first] + seg*2: query i in the 2nd repeat looks at i-P+1; others uniform."""
    a = _uniform(T)
    for i in range(P + 1, T):
        a[i] = 0
        a[i, i - P + 1] = 1
    return a


def _duplicate_pattern(T, P):
    a = _uniform(T)
    for i in range(P + 1, T):
        a[i] = 0
        a[i, i - P] = 1
    return a


@pytest.fixture
def probe():
    return repeated_random_tokens(
        vocab_size=50, seq_len=T, batch_size=B, reps=2, first_token=0, seed=1, vary=False
    )


def test_probe_structure(probe):
    P = probe_seg_len(T, 2)
    assert probe.shape == (B, 1 + 2 * P)
    assert torch.equal(probe[:, 1 : 1 + P], probe[:, 1 + P :])
    assert (probe[:, 1:] != 0).all()  # the first token never appears in the segment
    for b in range(B):  # no repeats inside a segment when the vocabulary is big enough
        assert len(set(probe[b, 1 : 1 + P].tolist())) == P


def test_uniform_attention_has_max_entropy_and_chance_scores(probe):
    p = _uniform(T).expand(B, 1, T, T)
    assert M.entropy(p).item() == pytest.approx(1.0, abs=1e-6)
    chance = M.chance_prev_token(T)
    assert M.prev_token(p).item() == pytest.approx(chance, rel=1e-6)
    assert M.sink(p).item() == pytest.approx(chance, rel=1e-6)
    # mean distance of uniform attention over 0..i is i/2, averaged over i = 1..T-1
    assert M.mean_distance(p).item() == pytest.approx(sum(i / 2 for i in range(1, T)) / (T - 1), rel=1e-6)


def test_one_hot_attention_has_zero_entropy():
    for pat in (_prev_pattern(T), _sink_pattern(T)):
        assert M.entropy(pat.expand(B, 1, T, T)).item() == pytest.approx(0.0, abs=1e-6)


def test_ideal_previous_token_head(probe):
    p = _prev_pattern(T).expand(B, 1, T, T)
    chance = M.chance_prev_token(T)
    assert M.prev_token(p).item() == pytest.approx(1.0)
    assert M.mean_distance(p).item() == pytest.approx(1.0)
    assert M.local(p).item() == pytest.approx(1.0)
    assert M.sink(p).item() == pytest.approx(1 / (T - 1))  # only query 1 sees key 0 as its previous token
    assert M.sink(p).item() <= chance
    assert M.induction(p, probe).item() == pytest.approx(0.0)
    assert M.duplicate(p, probe).item() == pytest.approx(0.0)


def test_ideal_sink_head(probe):
    p = _sink_pattern(T).expand(B, 1, T, T)
    assert M.sink(p).item() == pytest.approx(1.0)
    assert M.prev_token(p).item() == pytest.approx(1 / (T - 1))
    assert M.induction(p, probe).item() == pytest.approx(0.0)  # BOS is never an induction target
    assert M.mean_distance(p).item() == pytest.approx(sum(range(1, T)) / (T - 1))


def test_ideal_induction_head_scores_one_not_half(probe):
    P = probe_seg_len(T, 2)
    p = _induction_pattern(T, P).expand(B, 1, T, T)
    assert M.induction(p, probe).item() == pytest.approx(1.0)
    # dividing the target mass by the attention of *all* rows (as TransformerLens' head detector does)
    # would score this ideal head only about 0.5
    all_rows = (p * M.induction_mask(probe)[:, None]).sum() / p.sum()
    assert 0.4 < all_rows.item() < 0.6
    assert M.prev_token(p).item() < 0.2
    assert M.sink(p).item() < 0.2
    assert M.duplicate(p, probe).item() == pytest.approx(0.0)


def test_ideal_duplicate_head(probe):
    P = probe_seg_len(T, 2)
    p = _duplicate_pattern(T, P).expand(B, 1, T, T)
    assert M.duplicate(p, probe).item() == pytest.approx(1.0)
    assert M.induction(p, probe).item() == pytest.approx(0.0)


def test_three_repeats_count_every_earlier_copy():
    toks = repeated_random_tokens(
        vocab_size=40, seq_len=31, batch_size=2, reps=3, first_token=0, seed=3, vary=False
    )
    Tn, P = toks.shape[1], probe_seg_len(31, 3)
    a = _uniform(Tn)
    for i in range(P + 1, Tn):  # attend to the token after the most recent copy only
        a[i] = 0
        a[i, i - P + 1] = 1
    assert M.induction(a.expand(2, 1, Tn, Tn), toks).item() == pytest.approx(1.0)


def test_varied_probe_separates_induction_from_fixed_offset_heads():
    Tn, Bn = 65, 4
    toks = repeated_random_tokens(vocab_size=100, seq_len=Tn, batch_size=Bn, reps=2, first_token=0, seed=2)
    lens = probe_seg_lens(Tn, Bn, 2)
    assert toks.shape == (Bn, Tn) and lens[0] == 32 and len(set(lens)) == Bn
    ideal, offset = [], []
    for b, P in enumerate(lens):
        assert torch.equal(toks[b, 1 + P : 1 + 2 * P], toks[b, 1 : 1 + P])  # repeated with period P
        a = _uniform(Tn)
        for i in range(P + 1, Tn):
            a[i] = 0
            a[i, i - P + 1] = 1
        ideal.append(a)
        o = _uniform(Tn)  # a positional head that always looks lens[0] - 1 tokens back
        for i in range(lens[0], Tn):
            o[i] = 0
            o[i, i - lens[0] + 1] = 1
        offset.append(o)
    assert M.induction(torch.stack(ideal)[:, None], toks).item() == pytest.approx(1.0)
    assert M.induction(torch.stack(offset)[:, None], toks).item() < 0.5  # only row 0 lines up


def _naive_target_score(pattern, tokens, kind):
    """Loop reference: mean over (b, i >= 1) rows with a target of the attention mass on the targets."""
    Bn, H, Tn, _ = pattern.shape
    out = []
    for h in range(H):
        total, rows = 0.0, 0
        for b in range(Bn):
            for i in range(1, Tn):
                if kind == "induction":
                    tg = [j for j in range(1, i) if tokens[b, j - 1] == tokens[b, i]]
                else:
                    tg = [j for j in range(0, i) if tokens[b, j] == tokens[b, i]]
                if tg:
                    total += sum(pattern[b, h, i, j].item() for j in tg)
                    rows += 1
        out.append(total / rows)
    return torch.tensor(out)


def test_target_scores_match_naive_loop_on_random_patterns_with_collisions():
    g = torch.Generator().manual_seed(0)
    Tn, H = 20, 3
    tokens = torch.randint(0, 5, (2, Tn), generator=g)  # small vocab: many collisions, adjacent repeats
    logits = torch.randn(2, H, Tn, Tn, generator=g).masked_fill(
        ~torch.tril(torch.ones(Tn, Tn, dtype=bool)), -1e9
    )
    p = logits.softmax(-1)
    for kind, fn in (("induction", M.induction), ("duplicate", M.duplicate)):
        torch.testing.assert_close(fn(p, tokens), _naive_target_score(p, tokens, kind), rtol=1e-5, atol=1e-6)


def test_leading_dims_give_layer_by_head_tables(probe):
    P = probe_seg_len(T, 2)
    heads = [_prev_pattern(T), _sink_pattern(T), _induction_pattern(T, P), _uniform(T)]
    layer = torch.stack(heads)[None].expand(B, -1, -1, -1)  # (B, 4, T, T)
    pats = torch.stack([layer, layer.flip(1)])  # (L=2, B, H=4, T, T)
    ind = M.induction(pats, probe)
    assert ind.shape == (2, 4)
    assert ind[0].argmax().item() == 2 and ind[1].argmax().item() == 1
    assert M.prev_token(pats)[0, 0].item() == pytest.approx(1.0)
    assert M.sink(pats)[1, 2].item() == pytest.approx(1.0)
    ent = M.entropy(pats)
    assert ent[0, 3].item() == pytest.approx(1.0, abs=1e-6) and ent[0, 0].item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_entropy_with_sliding_window_normalises_by_visible_keys():
    Tn, w = 12, 4
    a = torch.tril(torch.ones(Tn, Tn)) * torch.triu(torch.ones(Tn, Tn), diagonal=-(w - 1))
    a = a / a.sum(-1, keepdim=True)  # uniform over the window
    assert M.entropy(a[None, None], window=w).item() == pytest.approx(1.0, abs=1e-6)
    assert M.entropy(a[None, None]).item() < 0.95  # against the full causal count it is not maximal


def test_icl_score_and_positions():
    assert M.icl_positions(512) == (50, 500)
    assert M.icl_positions(64) == (6, 62)
    losses = torch.zeros(4, 64)
    losses[:, 6] = 3.0
    losses[:, 62] = 1.0
    assert M.icl_score(losses, band=0) == pytest.approx(-2.0)
    losses[:, 5:8] = 3.0  # the default band at T=64 is +-1 position
    losses[:, 61:64] = 1.0
    losses[:, 30] = 100.0  # outside both bands: ignored
    assert M.icl_score(losses) == pytest.approx(-2.0)


def test_gqa_kv_head_mapping():
    assert [M.kv_head_of(h, 8, 2) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [M.kv_head_of(h, 4, 1) for h in range(4)] == [0, 0, 0, 0]
    assert [M.kv_head_of(h, 4, None) for h in range(4)] == [0, 1, 2, 3]


def test_entropy_formula_on_a_small_row():
    a = torch.zeros(1, 1, 3, 3)
    a[0, 0, 0, 0] = 1
    a[0, 0, 1, :2] = torch.tensor([0.5, 0.5])
    a[0, 0, 2] = torch.tensor([0.7, 0.2, 0.1])
    h2 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert M.entropy(a).item() == pytest.approx((1.0 + h2) / 2, rel=1e-6)


def test_study_data_has_one_period_per_row():
    import numpy as np

    from gptlab.data.induction import varied_sequences

    rows, _ = varied_sequences(20, 8, 32, 65, 256, np.random.default_rng(0))
    periods = set()
    for r in rows:
        P = next(
            p for p in range(8, 33) if (r[p:] == r[:-p]).all()
        )  # smallest shift that maps the row onto itself
        periods.add(P)
    assert len(periods) > 3  # the period varies from row to row
