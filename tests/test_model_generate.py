"""Generation: KV cache == no cache for every scheme (also past block_size), against naive loops; sampling."""

import functools

import helpers
import pytest
import torch

from gptlab.errors import UserError
from gptlab.model import POSITIONS, KVCache
from gptlab.model.generate import sample_next

BS = 8  # block_size of the test models: 20+ new tokens go well past it


# sharper, more varied logits than the init (std 0.5): greedy choices are far from ties
tiny = functools.partial(helpers.tiny, vocab_size=29, block_size=BS, std=0.5)


def naive_greedy(m, prompt, n, context):
    """Greedy decoding by re-running the whole model; context(seq, step) -> (tokens to run, forward kwargs)."""
    seq = prompt
    for step in range(n):
        x, kw = context(seq, step)
        with torch.no_grad():
            logits, _ = m(x, **kw)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return seq


@pytest.mark.parametrize("kv,window", [(4, None), (2, 3), (1, 5)])
@pytest.mark.parametrize("position", POSITIONS)
def test_cache_equals_no_cache_past_block_size(position, kv, window):
    m = tiny(position, kv, window)
    for prompt_len in (3, 11):  # a short prompt, and one longer than block_size
        prompt = torch.randint(0, 29, (2, prompt_len))
        a = m.generate(prompt, 24, temperature=0, use_cache=True)
        b = m.generate(prompt, 24, temperature=0, use_cache=False)
        assert a.shape == (2, prompt_len + 24)
        assert torch.equal(a, b)
        # sampling draws the same numbers from the same distributions, and its output is never degenerate
        torch.manual_seed(1)
        a = m.generate(prompt, 24, temperature=1.0, use_cache=True)
        torch.manual_seed(1)
        b = m.generate(prompt, 24, temperature=1.0, use_cache=False)
        assert torch.equal(a, b)
        assert len(set(a[:, prompt_len:].flatten().tolist())) >= 3


@pytest.mark.parametrize("position", POSITIONS)
def test_within_block_size_generation_is_plain_greedy(position):
    m = tiny(position, 2)
    prompt = torch.randint(0, 29, (2, 2))
    ref = naive_greedy(m, prompt, BS - 2, lambda seq, step: (seq, {}))
    assert torch.equal(m.generate(prompt, BS - 2, temperature=0), ref)


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("position", ["none", "rope", "alibi", "relative", "t5"])
def test_relative_schemes_slide_a_window_of_block_size(position, window):
    """Past block_size the rolling cache equals the whole sequence run with a min(window, block_size) window."""
    m = tiny(position, 2, window)
    w = BS if window is None else window
    prompt = torch.randint(0, 29, (1, 4))
    ref = naive_greedy(m, prompt, 20, lambda seq, step: (seq, {"window": w}))
    assert torch.equal(m.generate(prompt, 20, temperature=0, use_cache=True), ref)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_absolute_schemes_crop_and_refill(position):
    """Context seq[s:]; when it would exceed block_size, s jumps to keep the last block_size // 2 tokens."""
    m = tiny(position, 2)
    state = {"s": 0}

    def context(seq, step):
        n = seq.shape[1]
        if step == 0:
            state["s"] = max(0, n - BS)
        elif n - state["s"] > BS:
            state["s"] = n - BS // 2
        return seq[:, state["s"] :], {}

    for plen in (3, 13):
        prompt = torch.randint(0, 29, (1, plen))
        ref = naive_greedy(m, prompt, 20, context)
        assert torch.equal(m.generate(prompt, 20, temperature=0, use_cache=True), ref)


def test_rolling_cache_stays_bounded():
    m = tiny("rope", 2)
    cache = KVCache(2, max_len=BS)
    with torch.no_grad():
        m(torch.randint(0, 29, (1, 5)), cache=cache, window=BS)
        for _ in range(20):
            m(torch.randint(0, 29, (1, 1)), cache=cache, window=BS)
    assert cache.next_pos == 25 and len(cache) == BS
    assert cache.bytes() == BS * m.kv_cache_bytes_per_token()


@pytest.mark.parametrize("window", [None, 3, 50])
@pytest.mark.parametrize("position", POSITIONS)
def test_cache_capacity_and_positions_are_what_generation_holds(position, window, monkeypatch):
    """GPT.cache_capacity / cache_positions (sample.py's KV-cache line and memory check) equal the most positions
    the KVCache of generate really held after a forward, for short and long prompts and generations."""
    held = []
    real_end = KVCache.end

    def spy_end(self):
        real_end(self)
        held.append(len(self))

    monkeypatch.setattr(KVCache, "end", spy_end)
    m = tiny(position, 2, window)
    # the rule written out: absolute schemes crop and re-fill at block_size, the others slide their window
    absolute = position in ("learned", "sinusoidal")
    assert m.cache_capacity() == (BS if absolute or window is None else min(window, BS))
    for plen, new in ((3, 2), (3, 30), (11, 30), (11, 1), (1, 0)):
        held.clear()
        m.generate(torch.randint(0, 29, (2, plen)), new, temperature=1.0)
        assert max(held, default=0) == m.cache_positions(plen, new), (plen, new)


def test_generate_iter_yields_the_generate_columns():
    m = tiny("rope", 2)
    prompt = torch.randint(0, 29, (3, 4))
    cols = list(m.generate_iter(prompt, 6, temperature=0))
    assert len(cols) == 6 and all(c.shape == (3, 1) for c in cols)
    assert torch.equal(torch.cat([prompt, *cols], 1), m.generate(prompt, 6, temperature=0))


def test_sampling_is_seeded_and_filters_reduce_to_greedy():
    m = tiny("alibi", 1)
    prompt = torch.randint(0, 29, (2, 3))
    torch.manual_seed(5)
    a = m.generate(prompt, 15, temperature=1.0)
    torch.manual_seed(5)
    b = m.generate(prompt, 15, temperature=1.0, use_cache=False)
    assert torch.equal(a, b)  # same seed, same text (and the cache does not change sampling)
    g = torch.Generator().manual_seed(3)
    c = m.generate(prompt, 15, temperature=0.8, generator=g)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(c, m.generate(prompt, 15, temperature=0.8, generator=g))
    greedy = m.generate(prompt, 15, temperature=0)
    assert torch.equal(m.generate(prompt, 15, temperature=1.0, top_k=1), greedy)
    assert torch.equal(m.generate(prompt, 15, temperature=1.0, top_p=1e-6), greedy)


def test_sample_next_top_k_and_top_p_distributions():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    counts = lambda x: torch.bincount(x.view(-1), minlength=4).float() / x.numel()  # noqa: E731
    # top_k=2 renormalises over tokens 0, 1: 0.625 / 0.375
    f = counts(sample_next(logits, 1.0, top_k=2, generator=g))
    assert f[2:].sum() == 0 and abs(f[0] - 0.625) < 0.04
    # top_p=0.7: the smallest set with mass >= 0.7 is {0, 1}
    f = counts(sample_next(logits, 1.0, top_p=0.7, generator=g))
    assert f[2:].sum() == 0 and abs(f[0] - 0.625) < 0.04
    # top_p=0.85 keeps {0, 1, 2}; plain sampling follows the probabilities
    f = counts(sample_next(logits, 1.0, top_p=0.85, generator=g))
    assert f[3] == 0 and abs(f[2] - 0.15 / 0.95) < 0.03
    f = counts(sample_next(logits, 1.0, generator=g))
    torch.testing.assert_close(f, probs[0], atol=0.03, rtol=0)
    # temperature -> 0 sharpens towards the argmax; temperature 0 is the argmax
    assert sample_next(logits[:3], 0.0).view(-1).tolist() == [0, 0, 0]
    f = counts(sample_next(logits, 0.25, generator=g))
    assert f[0] > 0.85


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_sampling_arguments_raise_user_error(kw, match):
    m = tiny("rope")
    with pytest.raises(UserError, match=match):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 3, **kw)


class _NaiveCache:
    """Reference KV cache: concatenate every step, keep the last max_len positions after each forward."""

    def __init__(self, n_layer, max_len):
        self.k, self.v, self.max_len = [None] * n_layer, [None] * n_layer, max_len
        self.start = self.next_pos = self.pending = 0

    def begin(self, T):
        self.pending = T

    def update(self, layer, k, v):
        k_all = k if self.k[layer] is None else torch.cat((self.k[layer], k), dim=2)
        v_all = v if self.v[layer] is None else torch.cat((self.v[layer], v), dim=2)
        keep = k_all.shape[2] if self.max_len is None else min(self.max_len, k_all.shape[2])
        self.k[layer], self.v[layer] = k_all[:, :, -keep:], v_all[:, :, -keep:]
        return k_all, v_all, self.start

    def end(self):
        self.next_pos += self.pending
        if self.max_len is not None:
            self.start = max(self.start, self.next_pos - self.max_len)


def test_kv_cache_buffers_match_a_naive_concatenating_cache():
    """In-place buffers (slot shifts, growth, long prompts, reset) return exactly what concatenation would."""
    import random

    from gptlab.model.kv_cache import KVCache

    rng = random.Random(0)
    for _ in range(120):
        max_len = rng.choice([None, 1, 3, 8, 20])
        capacity = rng.choice([None, 1, 5, 12, 40])
        cache, ref = KVCache(2, max_len, capacity), _NaiveCache(2, max_len)
        for _ in range(25):
            if rng.random() < 0.08:  # a re-fill: the buffers are kept, every position forgotten
                cache.reset()
                ref = _NaiveCache(2, max_len)
            T = rng.choice([1, 1, 1, 2, 5, 30])
            cache.begin(T)
            ref.begin(T)
            for layer in range(2):
                k, v = torch.randn(2, 3, T, 4), torch.randn(2, 3, T, 4)
                ka, va, sa = cache.update(layer, k, v)
                kb, vb, sb = ref.update(layer, k, v)
                assert torch.equal(ka, kb) and torch.equal(va, vb) and sa == sb
            cache.end()
            ref.end()
            assert (cache.start, cache.next_pos) == (ref.start, ref.next_pos)
            held = ref.next_pos - ref.start
            assert (
                len(cache) == held and cache.bytes() == 2 * 2 * held * 2 * 3 * 4 * 4
            )  # k+v, layers, B, nkv, hs, fp32


@pytest.mark.parametrize("kv,window", [(4, None), (2, 3), (1, 5)])
@pytest.mark.parametrize("position", [*POSITIONS, "relative-keys-only"])
def test_fixed_shape_decode_step_equals_the_kv_cache(position, kv, window, monkeypatch):
    """compile=True's step (GPT.decode_step through a StaticKVCache ring), run eagerly here: the same tokens
    as the growing KV cache for every scheme, past block_size, for greedy and seeded sampling; and every step
    has the same shapes (what a single compile and a CUDA graph need)."""
    extra = {"rel_values": False} if position == "relative-keys-only" else {}
    m = tiny(position.split("-")[0], kv, window, **extra)
    shapes = set()
    step = m.decode_step

    def eager_step(idx, ring, win):
        shapes.add((tuple(idx.shape), *(tuple(t.shape) for t in (*ring.k, *ring.v, ring.slot_pos))))
        return step(idx, ring, win)

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: eager_step)
    for prompt_len in (3, 11):
        prompt = torch.randint(0, 29, (2, prompt_len))
        ring = m.generate(prompt, 24, temperature=0, compile=True)
        assert torch.equal(ring, m.generate(prompt, 24, temperature=0))
        torch.manual_seed(3)
        a = m.generate(prompt, 24, temperature=1.0, top_k=10, compile=True)
        torch.manual_seed(3)
        assert torch.equal(a, m.generate(prompt, 24, temperature=1.0, top_k=10))
    assert len(shapes) == 1


def test_compile_option_is_checked():
    m = tiny("rope")
    with pytest.raises(UserError, match="compile='fast' is not known"):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 3, compile="fast")


@pytest.mark.slow
def test_compiled_decode_equals_eager_on_cpu():
    """The real torch.compile (inductor, fullgraph) of the decode step: greedy tokens equal the eager cache's
    for a biased scheme and a rotary one, past block_size. About 30-60 s on a 2-core CPU (compilation)."""
    from torch._dynamo.utils import counters

    for position in ("alibi", "rope"):
        m = tiny(position, 2, 3)
        prompt = torch.randint(0, 29, (2, 5))
        eager = m.generate(prompt, 20, temperature=0)
        assert torch.equal(m.generate(prompt, 20, temperature=0, compile=True), eager)
        # a second call, even of another length, reuses the compiled step and its ring: no new graph
        graphs = counters["stats"]["unique_graphs"]
        longer = m.generate(prompt, 30, temperature=0, compile=True)
        assert torch.equal(longer, m.generate(prompt, 30, temperature=0))
        assert counters["stats"]["unique_graphs"] == graphs
