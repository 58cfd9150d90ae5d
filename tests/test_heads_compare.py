"""heads.py compare=: heads matched between two models (a known permutation, other depths), compare.csv and
its deltas against the two reports, bad input, and compare.html in real Chromium against the models' patterns."""

import copy
import csv
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from gptlab.errors import UserError
from gptlab.interp import metrics as M
from gptlab.interp.pairing import head_rows, layer_groups, match_heads, overlap, similarity_matrix
from gptlab.interp.run_compare import run_compare
from gptlab.interp.run_report import run_report
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TEXT = "ROMEO: good morrow cousin. ROMEO: good"
QUICK = ["icl.batch_size=2", "probe.batch_size=2", "ablation.batch_size=2", "ablation.seq_len=16"]


# ---------------------------------------------------------------------------------------------- helpers
def _sharpen(model: GPT, scale: float = 100.0) -> GPT:
    """Scale every W_Q so the random heads attend sharply and differ from each other (not all near-uniform)."""
    with torch.no_grad():
        for b in model.blocks:
            b.attn.q_proj.weight.mul_(scale)
    return model


def _group_perm(n_head: int, n_kv: int, kv_perm: list[int], within: list[list[int]]) -> list[int]:
    """A query-head permutation that keeps GQA groups whole: new head j is old head perm[j]."""
    g = n_head // n_kv
    return [kv_perm[j // g] * g + within[j // g][j % g] for j in range(n_head)]


def permute_heads(model: GPT, layer: int, perm: list[int]) -> None:
    """Reorder the heads of one layer in place: new head j is old head perm[j] (its q, k, v rows and o columns)."""
    attn = model.blocks[layer].attn
    H, n_kv, hs = attn.n_head, attn.n_kv_head, attn.head_dim
    g = H // n_kv
    kv_perm = [perm[c * g] // g for c in range(n_kv)]
    assert all(perm[j] // g == kv_perm[j // g] for j in range(H)), "perm must keep the GQA groups"

    def rows(w, order):
        return torch.cat([w[o * hs : (o + 1) * hs] for o in order])

    with torch.no_grad():
        attn.q_proj.weight.copy_(rows(attn.q_proj.weight, perm))
        attn.k_proj.weight.copy_(rows(attn.k_proj.weight, kv_perm))
        attn.v_proj.weight.copy_(rows(attn.v_proj.weight, kv_perm))
        attn.o_proj.weight.copy_(rows(attn.o_proj.weight.T, perm).T)


def _inputs(model: GPT, x: torch.Tensor, probe: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        return [
            head_rows(model.attention_patterns(x)[:, 0].numpy()),
            head_rows(model.attention_patterns(probe).numpy()),
        ]


def _tiny(n_layer=2, n_head=4, n_kv_head=None, seed=0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=65,
        block_size=32,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_embd=32,
        position="rope",
    )
    return _sharpen(GPT(cfg).eval())


# ---------------------------------------------------------------------------------------------- matching
@pytest.mark.parametrize(
    "n_kv, perms",
    [
        (None, [[2, 0, 3, 1], [1, 3, 0, 2]]),  # MHA: any order
        (
            2,
            [_group_perm(4, 2, [1, 0], [[1, 0], [0, 1]]), _group_perm(4, 2, [0, 1], [[1, 0], [1, 0]])],
        ),  # GQA
    ],
)
def test_matching_recovers_a_known_permutation(n_kv, perms):
    a = _tiny(n_kv_head=n_kv)
    b = copy.deepcopy(a)
    for l, p in enumerate(perms):
        permute_heads(b, l, p)
    x = torch.randint(0, 65, (1, 32), generator=torch.Generator().manual_seed(1))
    probe = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the same function: permuting heads changes nothing but their order
        torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-5)
    groups = layer_groups(2, 2)
    m = match_heads(similarity_matrix(_inputs(a, x, probe), _inputs(b, x, probe), groups), groups)
    want = {(l, perms[l][j]): (l, j) for l in range(2) for j in range(4)}  # A's head perm[j] is B's head j
    assert {(la, ha): (lb, hb) for la, ha, lb, hb, _ in m.pairs} == want
    assert all(s == pytest.approx(1.0, abs=1e-5) for *_, s in m.pairs)
    assert m.mean_similarity == pytest.approx(1.0, abs=1e-5)
    assert not m.unmatched_a and not m.unmatched_b
    # the heads really differ, so the match is not a tie: every wrong pair is well below 1
    for la, ha, lb, hb, _ in m.pairs:
        others = [m.similarity[la, ha, lb, h] for h in range(4) if h != hb]
        assert max(others) < 0.8
    assert m.same_position < 0.9  # and leaving them in place would be wrong


def test_overlap_is_the_shared_attention_mass():
    a = np.array([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]])  # one head, two query rows
    b = np.array([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    s = overlap(a, b)
    assert s[0, 0] == pytest.approx((1.0 + (0.2 + 0.3 + 0.0)) / 2)
    assert s[0, 1] == pytest.approx((0.0 + 0.5) / 2)


@pytest.mark.parametrize("n_a", range(1, 7))
@pytest.mark.parametrize("n_b", range(1, 7))
def test_layer_groups_follow_the_depth_fraction(n_a, n_b):
    groups = layer_groups(n_a, n_b)
    shallow, deep = (n_a, n_b) if n_a <= n_b else (n_b, n_a)
    # reference: deep layer d sits at depth (d + 1/2) / deep and joins the shallow layer whose span
    # [l / shallow, (l + 1) / shallow) holds it
    ref = {l: [] for l in range(shallow)}
    for d in range(deep):
        mid = Fraction(2 * d + 1, 2 * deep)
        ref[next(l for l in range(shallow) if Fraction(l, shallow) <= mid < Fraction(l + 1, shallow))].append(
            d
        )
    got = {(ga if n_a <= n_b else gb)[0]: (gb if n_a <= n_b else ga) for ga, gb in groups}
    assert got == ref
    assert all(len(ga) == 1 or len(gb) == 1 for ga, gb in groups)
    assert sorted(l for ga, _ in groups for l in ga) == list(range(n_a))
    assert sorted(l for _, gb in groups for l in gb) == list(range(n_b))


def test_layer_groups_as_documented():
    assert layer_groups(2, 4) == [([0], [0, 1]), ([1], [2, 3])]
    assert layer_groups(4, 2) == [([0, 1], [0]), ([2, 3], [1])]
    assert layer_groups(3, 4) == [([0], [0]), ([1], [1, 2]), ([2], [3])]
    assert layer_groups(3, 3) == [([0], [0]), ([1], [1]), ([2], [2])]


def _deep_copy_of(a: GPT, layout: list) -> GPT:
    """A deeper model whose layers are A's layers (by index, heads permuted) or silent layers (None): a silent
    layer's attention and MLP write nothing, so the next copied layer sees what it saw in A."""
    cfg = GPTConfig(**{**a.config.to_dict(), "n_layer": len(layout)})
    b = GPT(cfg).eval()
    with torch.no_grad():
        b.tok_emb.weight.copy_(a.tok_emb.weight)
        b.ln_f.load_state_dict(a.ln_f.state_dict())
        b.lm_head.load_state_dict(a.lm_head.state_dict())
        for i, src in enumerate(layout):
            if src is None:
                b.blocks[i].attn.o_proj.weight.zero_()
                b.blocks[i].mlp.proj.weight.zero_()
            else:
                b.blocks[i].load_state_dict(a.blocks[src].state_dict())
                permute_heads(b, i, [3, 2, 1, 0])
    return b


def test_matching_across_depths_pairs_layers_at_the_same_depth():
    a = _tiny()
    x = torch.randint(0, 65, (1, 32), generator=torch.Generator().manual_seed(1))
    probe = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(2))
    # B = [silent, A0, A1, silent]: A's layer 0 sits at B's layer 1 (same depth group), layer 1 at B's layer 2
    b = _deep_copy_of(a, [None, 0, 1, None])
    groups = layer_groups(2, 4)
    m = match_heads(similarity_matrix(_inputs(a, x, probe), _inputs(b, x, probe), groups), groups)
    assert {(la, ha): (lb, hb) for la, ha, lb, hb, _ in m.pairs} == {
        (l, h): (l + 1, 3 - h) for l in range(2) for h in range(4)
    }
    assert all(s == pytest.approx(1.0, abs=1e-5) for *_, s in m.pairs)
    assert sorted(m.unmatched_b) == [(l, h) for l in (0, 3) for h in range(4)]
    # B = [A0, A1, silent, silent]: A's layer 1 has an exact copy at B's layer 1, but that is at another depth
    # (B's layer 1 covers depths 1/4..1/2, A's layer 1 covers 1/2..1): it is never a candidate
    b2 = _deep_copy_of(a, [0, 1, None, None])
    m2 = match_heads(similarity_matrix(_inputs(a, x, probe), _inputs(b2, x, probe), groups), groups)
    assert np.isnan(m2.similarity[1, :, 1, :]).all() and np.isnan(m2.similarity[0, :, 2:, :]).all()
    for la, _, lb, _, s in m2.pairs:
        assert lb in ([0, 1] if la == 0 else [2, 3])
        assert s < 1 - 1e-3 or la == 0


# ---------------------------------------------------------------------------------------------- runs on disk
@pytest.fixture(scope="module")
def char_data():
    from gptlab.data import load_meta, prepare

    cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    return cfg, load_meta(prepare(cfg, quiet=True))


def _save(run_dir: Path, model: GPT, data_cfg, meta, step=7, snapshots=()) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    kw = dict(model_config=model.config.to_dict(), config={"data": data_cfg}, tokenizer=meta)
    save_checkpoint(run_dir / "ckpt.pt", model=model.state_dict(), step=step, **kw)
    for s in snapshots:
        save_checkpoint(
            run_dir / "snapshots" / f"step_{s:06d}.pt", model=model.state_dict(), step=s, snapshot=True, **kw
        )
    return run_dir


def _char_model(meta, seed=0, n_layer=2, n_kv_head=2, position="rope"):
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=meta["vocab_size"],
        block_size=48,
        n_layer=n_layer,
        n_head=4,
        n_kv_head=n_kv_head,
        n_embd=32,
        position=position,
    )
    return _sharpen(GPT(cfg).eval())


PERMS = [[1, 0, 3, 2], [2, 3, 0, 1]]  # keep the GQA groups (2 kv heads of 2 query heads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, char_data):
    root = tmp_path_factory.mktemp("runs")
    a = _char_model(char_data[1], seed=0)
    b = copy.deepcopy(a)
    for l, p in enumerate(PERMS):
        permute_heads(b, l, p)
    return {
        "a": _save(root / "a", a, *char_data, snapshots=(0, 4)),
        "perm": _save(root / "perm", b, *char_data),
        "seed": _save(root / "seed", _char_model(char_data[1], seed=1), *char_data),
        "deep": _save(root / "deep", _char_model(char_data[1], seed=2, n_layer=4), *char_data),
        "mha": _save(root / "mha", _char_model(char_data[1], seed=3, n_kv_head=None), *char_data),
    }


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("heads", overrides=list(overrides))


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def _num(v: str):
    return None if v == "" else float(v)


def test_a_permuted_copy_matches_head_for_head_with_zero_deltas(runs, tmp_path):
    res = run_compare(
        _cfg(f"run={runs['a']}", f"compare={runs['perm']}", f"out={tmp_path}", f"text={TEXT}", *QUICK)
    )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "compare.csv",
        "compare.html",
        "compare.md",
    ]
    rows = _csv(tmp_path / "compare.csv")
    pairs = {(int(r["layer_a"]), int(r["head_a"])): (int(r["layer_b"]), int(r["head_b"])) for r in rows}
    assert pairs == {(l, PERMS[l][j]): (l, j) for l in range(2) for j in range(4)}
    assert all(float(r["similarity"]) == pytest.approx(1.0, abs=1e-4) for r in rows)
    sim = res["matching"].similarity  # runner-up: the best other head of B in the layer, clearly below 1
    for r in rows:
        la, ha, lb = int(r["layer_a"]), int(r["head_a"]), int(r["layer_b"])
        others = [sim[la, ha, lb, h] for h in range(4) if h != int(r["head_b"])]
        assert float(r["runner_up"]) == pytest.approx(max(others), abs=1e-5) and max(others) < 0.9
    for r in rows:  # the same heads: every metric, ablations included, is unchanged
        for m in M.METRIC_NAMES:
            if r.get(f"{m}_delta") not in (None, ""):
                assert abs(float(r[f"{m}_delta"])) <= 2e-4, (m, r)
    assert "mean similarity 1.000" in res["summary"][1]


def test_compare_csv_columns_and_deltas_equal_the_two_reports(runs, tmp_path):
    common = [f"text={TEXT}", *QUICK]
    run_report(_cfg(f"run={runs['a']}", f"out={tmp_path / 'a'}", "timeline=false", *common))
    run_report(_cfg(f"run={runs['seed']}", f"out={tmp_path / 'b'}", "timeline=false", *common))
    run_compare(_cfg(f"run={runs['a']}", f"compare={runs['seed']}", f"out={tmp_path / 'c'}", *common))
    ra = {(int(r["layer"]), int(r["head"])): r for r in _csv(tmp_path / "a" / "heads.csv")}
    rb = {(int(r["layer"]), int(r["head"])): r for r in _csv(tmp_path / "b" / "heads.csv")}
    rows = _csv(tmp_path / "c" / "compare.csv")
    metrics = [m for m in M.METRIC_NAMES if m in next(iter(ra.values()))]
    assert {"induction", "prev_token", "zero_ablation", "dla"} <= set(metrics)
    want = ["layer_a", "head_a", "layer_b", "head_b", "similarity", "runner_up", "kind_a", "kind_b"]
    for m in metrics:
        want += [f"{m}_a", f"{m}_b", f"{m}_delta"]
    assert list(rows[0]) == want
    assert len(rows) == 8 and all(r["layer_b"] != "" for r in rows)
    assert sorted((int(r["layer_b"]), int(r["head_b"])) for r in rows) == sorted(rb)  # a one-to-one matching
    n_nonzero = 0
    for r in rows:
        a, b = ra[int(r["layer_a"]), int(r["head_a"])], rb[int(r["layer_b"]), int(r["head_b"])]
        assert r["kind_a"] == a["kind"] and r["kind_b"] == b["kind"]
        for m in metrics:
            va, vb = _num(a[m]), _num(b[m])
            assert _num(r[f"{m}_a"]) == va and _num(r[f"{m}_b"]) == vb
            if va is None or vb is None:
                assert r[f"{m}_delta"] == ""
            else:
                assert float(r[f"{m}_delta"]) == pytest.approx(vb - va, abs=1e-5)
                n_nonzero += abs(vb - va) > 1e-3
    assert n_nonzero > 10  # two different models: the deltas are not all zero
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "| checkpoint |" in md and "## Matched heads" in md and "induction Δ" in md


def test_compare_across_depths_uses_the_depth_groups(runs, tmp_path):
    res = run_compare(
        _cfg(
            f"run={runs['a']}",
            f"compare={runs['deep']}",
            f"out={tmp_path}",
            f"text={TEXT}",
            "ablation.enabled=false",
        )
    )
    rows = _csv(tmp_path / "compare.csv")
    pairs = [r for r in rows if r["layer_a"] != "" and r["layer_b"] != ""]
    assert len(pairs) == 8 and len(rows) == 16  # 8 pairs, and the 8 heads of B left over
    for r in pairs:
        assert int(r["layer_b"]) in ([0, 1] if r["layer_a"] == "0" else [2, 3])
        assert 0 < float(r["similarity"]) <= 1
    assert all(r["layer_a"] == "" and r["similarity"] == "" for r in rows[8:])
    assert any("layers by depth: A L0 <-> B L0, L1; A L1 <-> B L2, L3" in line for line in res["summary"])


def test_compare_a_step_pairs_by_position(runs, capsys):
    res = run_compare(_cfg(f"run={runs['a']}", "compare=step:3", f"text={TEXT}", "ablation.enabled=false"))
    assert res["out"] == runs["a"] / "heads" / "compare_step_000004"  # the nearest kept step, said in a note
    assert "step 3 is not kept; using the nearest kept step, 4" in capsys.readouterr().err
    assert res["matching"].method == "position"
    assert [p[:4] for p in res["matching"].pairs] == [(l, h, l, h) for l in range(2) for h in range(4)]


def test_compare_an_hf_export_of_the_same_model(char_data, tmp_path):
    """A Hugging Face directory whose tokenizer.json is the char vocabulary counts as the same tokenizer."""
    from gptlab.interop.hf import export_hf
    from gptlab.open_run import load_run

    run = _save(tmp_path / "gpt2", _char_model(char_data[1], n_kv_head=None, position="learned"), *char_data)
    export_hf(load_run(run), tmp_path / "hf", verify=False)  # GPT2LMHeadModel, the chars as tokenizer.json
    res = run_compare(
        _cfg(f"run={run}", f"compare={tmp_path / 'hf'}", f"out={tmp_path / 'c'}", f"text={TEXT}", *QUICK)
    )
    assert [p[:4] for p in res["matching"].pairs] == [(l, h, l, h) for l in range(2) for h in range(4)]
    assert res["matching"].mean_similarity == pytest.approx(1.0, abs=1e-4)


def _other_tokenizer_runs(tmp_path, char_data):
    data_cfg, meta = char_data
    ids_meta = {"tokenizer": "ids", "vocab_size": meta["vocab_size"], "eot_id": None}
    chars = "".join(reversed(meta["chars"]))
    other_chars = {**meta, "chars": chars}
    m = _char_model(meta)
    return {
        "ids": _save(tmp_path / "ids", m, data_cfg, ids_meta),
        "chars": _save(tmp_path / "chars", m, data_cfg, other_chars),
    }


@pytest.mark.parametrize(
    "which, compare, message",
    [
        (
            "a",
            "{ids}",
            r"tokenizes text differently from run= \(tokenizer char \(vocabulary \d+\) against ids",
        ),
        ("a", "{chars}", "both use the char tokenizer but with other vocabularies"),
        ("a", "{tmp}/nope", r"compare=.*/nope: .*nope"),
        ("seed", "step:4", "keeps no snapshots"),
        (
            "a",
            "step:99",
            "^compare=step:99 is beyond the snapshots of .*: kept steps are 0, 4; compare=step:last",
        ),
        ("a", "400", "pass compare=step:400"),
    ],
)
def test_bad_compare_is_one_line(runs, char_data, tmp_path, which, compare, message):
    other = _other_tokenizer_runs(tmp_path, char_data)
    target = compare.format(tmp=tmp_path, **other)
    with pytest.raises(UserError, match=message) as e:
        run_compare(_cfg(f"run={runs[which]}", f"compare={target}", f"out={tmp_path / 'o'}", "text=ROMEO"))
    assert "\n" not in str(e.value)


def test_position_matching_needs_one_shape(runs, tmp_path):
    with pytest.raises(UserError, match="needs two models of the same shape"):
        run_compare(
            _cfg(f"run={runs['a']}", f"compare={runs['deep']}", "compare_match=position", f"out={tmp_path}")
        )


@pytest.mark.slow  # a fresh interpreter loading torch and Hydra
def test_bad_compare_on_the_command_line_is_one_line(runs, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "heads.py"), f"run={runs['seed']}", "compare=step:400"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: compare=step:400: {runs['seed']} keeps no snapshots (train it with train.snapshots=log to keep "
        "them); compare=step:best or compare=step:last load best.pt or ckpt.pt"
    )


# ---------------------------------------------------------------------------------------------- the page
@pytest.mark.browser
def test_compare_page_shows_both_models_patterns_in_chromium(runs, tmp_path, chromium):
    from gptlab.open_run import load_run

    run_compare(_cfg(f"run={runs['a']}", f"compare={runs['mha']}", f"out={tmp_path}", f"text={TEXT}", *QUICK))
    a, b = load_run(runs["a"]), load_run(runs["mha"])
    ids = torch.tensor([a.tokenizer.encode(TEXT)])
    with torch.no_grad():
        pa, pb = a.model.attention_patterns(ids)[:, 0].numpy(), b.model.attention_patterns(ids)[:, 0].numpy()
    T = ids.shape[1]
    errors = []
    page = chromium.new_page(viewport={"width": 1500, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((tmp_path / "compare.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert page.locator("#tokens .tok").count() == T
    assert page.locator("#grid-a canvas").count() == 8 and page.locator("#grid-b canvas").count() == 8
    pairs = {
        (int(r["layer_a"]), int(r["head_a"])): (int(r["layer_b"]), int(r["head_b"]))
        for r in _csv(tmp_path / "compare.csv")
    }

    def check(la, ha, lb, hb, q):
        page.hover(f"#tokens .tok[data-i='{q}']")
        cells = page.eval_on_selector_all(
            "#weights td.wcell",
            "cs => cs.map(c => [c.dataset.side, +c.dataset.layer, +c.dataset.head, +c.dataset.q, +c.dataset.k, +c.dataset.w, c.textContent])",
        )
        assert len(cells) == 3 * (q + 1)
        for side, l, h, qq, k, w, text in cells:
            assert qq == q and float(text) == w
            if side == "a":
                assert (l, h) == (la, ha) and w == pytest.approx(pa[la, ha, q, k], abs=1.1e-4)
            elif side == "b":
                assert (l, h) == (lb, hb) and w == pytest.approx(pb[lb, hb, q, k], abs=1.1e-4)
            else:
                assert w == pytest.approx(pb[lb, hb, q, k] - pa[la, ha, q, k], abs=2.1e-4)
        # the token strip carries both weights too
        assert float(page.get_attribute(f"#tokens .tok[data-i='{q - 2}']", "data-wa")) == pytest.approx(
            pa[la, ha, q, q - 2], abs=1.1e-4
        )
        assert float(page.get_attribute(f"#tokens .tok[data-i='{q - 2}']", "data-wb")) == pytest.approx(
            pb[lb, hb, q, q - 2], abs=1.1e-4
        )

    # picking A's head shows its matched partner in B
    page.select_option("#a-head", "1,2")
    assert page.input_value("#b-head") == "{},{}".format(*pairs[1, 2])
    assert "the matched pair" in page.inner_text("#pair-info")
    check(1, 2, *pairs[1, 2], q=T - 3)
    # any head of B can be put beside it
    page.select_option("#b-head", "0,3")
    assert "not matched" in page.inner_text("#pair-info")
    check(1, 2, 0, 3, q=20)
    # a row of the matched-heads table selects that pair
    page.click("#pairs tbody tr[data-la='0'][data-ha='1']")
    assert page.input_value("#a-head") == "0,1" and page.input_value("#b-head") == "{},{}".format(
        *pairs[0, 1]
    )
    check(0, 1, *pairs[0, 1], q=T - 1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heads_compare.png"), full_page=True)
    assert not errors, errors
    html = (tmp_path / "compare.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html


# ---------------------------------------------------------------------------------------------- the live viewer
LIVE_TEXT = "ROMEO: good morrow cousin. ROMEO: good morrow"


@pytest.fixture(scope="module")
def live_server(char_data):
    import threading

    from gptlab.data import get_tokenizer
    from gptlab.interp.live import LiveModel
    from gptlab.interp.live_compare import LiveCompare
    from gptlab.interp.serve import HeadServer

    tok = get_tokenizer(char_data[1])
    a = _char_model(char_data[1], seed=0)
    b = copy.deepcopy(a)
    for l, p in enumerate(PERMS):
        permute_heads(b, l, p)
    with torch.no_grad():  # heads that move the logits, so an ablation shows in the predictions
        for m in (a, b):
            for blk in m.blocks:
                blk.attn.o_proj.weight.mul_(20)
    both = LiveCompare(LiveModel(a, tok, title="A"), LiveModel(b, tok, title="B"))
    srv = HeadServer(both.a, "127.0.0.1", 0, compare=both)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, a, b, tok
    srv.shutdown()
    srv.server_close()


def _post(srv, body, path="/api/compare"):
    import http.client
    import json

    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = r.status, json.loads(r.read())
    conn.close()
    return out


def test_api_compare_answers_both_models_and_matches_their_heads(live_server):
    srv, a, b, tok = live_server
    status, r = _post(srv, {"text": LIVE_TEXT, "top_k": 3})
    assert status == 200, r
    ids = torch.tensor([tok.encode(LIVE_TEXT)])
    with torch.no_grad():
        for side, m in (("a", a), ("b", b)):
            np.testing.assert_allclose(
                np.array(r[side]["patterns"]), m.attention_patterns(ids)[:, 0].numpy(), atol=1e-5
            )
    assert {(la, ha): (lb, hb) for la, ha, lb, hb, _ in r["pairs"]} == {
        (l, PERMS[l][j]): (l, j) for l in range(2) for j in range(4)
    }
    assert r["mean_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert r["a"]["predictions"] == r["b"]["predictions"]  # the same function
    # ablating B's copy of A's head L1H0 gives B what A gives with L1H0 ablated; A is left alone
    lb, hb = next((p[2], p[3]) for p in r["pairs"] if p[:2] == [1, 0])
    _, one = _post(srv, {"text": LIVE_TEXT, "top_k": 3, "ablate": [[1, 0]]})
    _, other = _post(srv, {"text": LIVE_TEXT, "top_k": 3, "ablate_b": [[lb, hb]]})
    assert other["a"]["predictions_clean"] is None and other["a"]["predictions"] == r["a"]["predictions"]
    assert [p["id"] for p in other["b"]["predictions"]] == [p["id"] for p in one["a"]["predictions"]]
    for x, y in zip(other["b"]["predictions"], one["a"]["predictions"]):
        assert x["prob"] == pytest.approx(y["prob"], abs=1e-5)
    assert other["b"]["predictions"] != r["b"]["predictions"]
    assert [[p[0], p[1], p[2], p[3]] for p in other["pairs"]] == [p[:4] for p in r["pairs"]]  # pairs stay put


@pytest.mark.parametrize(
    "body, message",
    [
        ({"text": "hi", "ablate_b": [[5, 0]]}, '"ablate_b" entries are [layer, head]'),
        ({"text": "hi", "ablate": [[0, 9]]}, '"ablate" entries are [layer, head]'),
        ({"text": "hi", "colour": 1}, "unknown field(s) colour"),
        ({"ablate_b": []}, 'missing "text"'),
    ],
)
def test_api_compare_bad_requests_are_json_errors(live_server, body, message):
    srv = live_server[0]
    status, r = _post(srv, body)
    assert status == 400 and message in r["error"] and r["status"] == 400
    assert _post(srv, {"text": "ok"})[0] == 200  # and it goes on serving


def test_api_compare_on_a_one_model_server_is_a_json_404(live_server):
    from gptlab.interp.serve import HeadServer

    live = live_server[0].compare.a
    srv = HeadServer(live, "127.0.0.1", 0)
    import threading

    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        status, r = _post(srv, {"text": "hi"})
        assert status == 404 and "compare=<B> serve=true" in r["error"]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.browser
def test_live_compare_page_in_chromium(live_server, chromium):
    srv, a, b, tok = live_server
    errors = []
    page = chromium.new_page(viewport={"width": 1500, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(srv.url) else errors.append(f"off-server {r.url}"))
    page.goto(srv.url)
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 1", timeout=20_000)  # the sample
    assert page.input_value("#text") == srv.compare.a.sample_text != ""
    page.fill("#text", LIVE_TEXT)
    page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 2", timeout=20_000)
    page.wait_for_function(f"() => document.querySelectorAll('#tokens .tok').length === {len(LIVE_TEXT)}")
    ids = torch.tensor([tok.encode(LIVE_TEXT)])
    with torch.no_grad():
        pa, pb = a.attention_patterns(ids)[:, 0].numpy(), b.attention_patterns(ids)[:, 0].numpy()
    page.select_option("#a-head", "1,1")
    lb, hb = 1, PERMS[1].index(1)  # B's copy of A's L1H1
    assert page.input_value("#b-head") == f"{lb},{hb}"
    q = 30
    page.click(f"#tokens .tok[data-i='{q}']")
    cells = page.eval_on_selector_all(
        "#weights td.wcell", "cs => cs.map(c => [c.dataset.side, +c.dataset.q, +c.dataset.k, +c.dataset.w])"
    )
    assert len(cells) == 3 * (q + 1)
    for side, qq, k, w in cells:
        want = {"a": pa[1, 1, q, k], "b": pb[lb, hb, q, k], "d": pb[lb, hb, q, k] - pa[1, 1, q, k]}[side]
        assert qq == q and w == pytest.approx(want, abs=2.1e-4)
    before = page.inner_text("#preds-b")
    page.check(f"#grid-b input.ablate[data-l='{lb}'][data-h='{hb}']")
    page.wait_for_function("() => +(document.body.dataset.updated || 0) >= 3", timeout=20_000)
    _, api = _post(srv, {"text": LIVE_TEXT, "ablate_b": [[lb, hb]], "top_k": 8})
    shown = page.eval_on_selector_all("#preds-b ol:first-of-type li", "ls => ls.map(l => +l.dataset.prob)")
    assert shown == [p["prob"] for p in api["b"]["predictions"]]
    assert page.inner_text("#preds-b") != before and "without the ablations" in page.inner_text("#preds-b")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heads_compare_live.png"), full_page=True)
    assert not errors, errors
