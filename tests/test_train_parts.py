"""Unit tests of the training pieces against formulas written out here."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.errors import UserError
from gptlab.runtime.device import pick_device, pick_dtype
from gptlab.training.config import OptimConfig, TrainConfig, from_mapping
from gptlab.training.mfu import mfu, peak_flops
from gptlab.training.optim import build_optimizer, lr_at
from gptlab.training.rng import get_rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10)
    max_iters = 110
    # warmup: linear from lr/10 at step 0 to lr at step 9
    assert lr_at(0, cfg, max_iters) == pytest.approx(1e-4)
    assert lr_at(9, cfg, max_iters) == pytest.approx(1e-3)
    # cosine: half way through the decay the lr is the mean of lr and min_lr
    assert lr_at(60, cfg, max_iters) == pytest.approx(0.5 * (1e-3 + 1e-4))
    for s in (10, 35, 85):
        expected = 1e-4 + 0.5 * (1 + math.cos(math.pi * (s - 10) / 100)) * (1e-3 - 1e-4)
        assert lr_at(s, cfg, max_iters) == pytest.approx(expected)
    assert lr_at(110, cfg, max_iters) == pytest.approx(1e-4)
    assert lr_at(500, cfg, max_iters) == pytest.approx(1e-4)
    lin = OptimConfig(lr=1.0, min_lr=0.0, warmup_iters=0, decay="linear")
    assert lr_at(25, lin, 100) == pytest.approx(0.75)
    assert lr_at(42, OptimConfig(lr=1e-3, warmup_iters=0, decay="constant"), 100) == pytest.approx(1e-3)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1), "cpu")
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_config_errors_are_one_line():
    with pytest.raises(UserError, match="valid keys"):
        from_mapping(TrainConfig, {"max_itres": 5}, "train")
    with pytest.raises(UserError, match="positive integer"):
        TrainConfig(max_iters=0)
    with pytest.raises(UserError, match="resume"):
        TrainConfig(resume="maybe")
    with pytest.raises(UserError, match="decay"):
        OptimConfig(decay="step")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            pick_device("cuda")


def test_device_and_dtype_defaults_on_cpu():
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_mfu_formula_and_peak_table():
    assert peak_flops(torch.device("cpu"), torch.float32) is None
    assert mfu(1e9, 1e3, None) is None
    # 6 GFLOP/token at 50k tokens/s on a 989 TFLOP/s device
    assert mfu(6e9, 5e4, 989e12) == pytest.approx(6e9 * 5e4 / 989e12)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    state = get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first


def test_load_run_rejects_foreign_and_mismatched_checkpoints(tmp_path):
    from gptlab.model import GPT, GPTConfig
    from gptlab.open_run import load_run
    from gptlab.rundir.checkpoint import save_checkpoint

    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    meta = {"tokenizer": "char", "vocab_size": 11, "chars": list("abcdefghijk")}
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    wrong = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=32)).state_dict()
    save_checkpoint(tmp_path / "mismatch.pt", model=wrong, model_config=cfg.__dict__, tokenizer=meta)
    for name, needle in [
        ("junk.pt", "not a readable"),
        ("foreign.pt", "not a gptlab checkpoint"),
        ("mismatch.pt", "do not match"),
        ("missing.pt", "no run directory or checkpoint"),
    ]:
        with pytest.raises(UserError, match=needle):
            load_run(tmp_path / name)
    with pytest.raises(UserError, match="no best.pt or ckpt.pt"):
        load_run(tmp_path)


def test_cpu_bf16_detection_and_the_auto_dtype(monkeypatch, capsys):
    from gptlab.runtime import device as D

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n"
    avx2 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert D.parse_cpuinfo(x86) == {
        "model": "AMD EPYC 9R14",
        "flags": {"fpu", "avx2", "fma", "avx512f", "avx512_bf16"},
    }
    cpu = torch.device("cpu")
    for text, native in ((x86, True), (avx2, False), (arm, True)):
        monkeypatch.setattr(D, "cpu_info", lambda text=text: D.parse_cpuinfo(text))
        assert D.cpu_native_bf16() is native
        # auto: bf16 only where the CPU has it natively and the workload gains from it (explicit attention)
        assert D.pick_dtype("auto", cpu, cpu_bf16_pays=True) == (torch.bfloat16 if native else torch.float32)
        assert D.pick_dtype("auto", cpu, cpu_bf16_pays=False) == torch.float32
        assert D.pick_dtype("bfloat16", cpu) == torch.bfloat16  # asked for: given, with a warning if slow
    D.warn_slow_dtype.cache_clear()
    D.warn_slow_dtype(torch.bfloat16, cpu)  # the Arm CPU (native bf16) is patched in last: no warning
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(D, "cpu_info", lambda: D.parse_cpuinfo(avx2))
    D.warn_slow_dtype.cache_clear()
    for _ in range(3):  # warned once, in one line
        D.warn_slow_dtype(torch.bfloat16, cpu)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "AMD EPYC 7B13" in err[0] and "no native bf16" in err[0]


def test_run_average_tokens_per_s_and_a_smoothed_eta():
    """tokens/s is the run's: all timed tokens over all timed seconds (not the last window's); the ETA uses an
    exponential moving average of seconds per step (weight 0.3 for the newest window) plus the evaluation
    and checkpoint time per step so far. Written out here from recorded window times."""
    from gptlab.training.throughput import Throughput

    windows = [
        (10, 1.0),
        (10, 1.2),
        (10, 30.0),
        (5, 0.05),
    ]  # one slow window (a busy machine), a fast last one
    t = Throughput(tokens_per_step=100)
    assert t.tokens_per_s is None and t.eta(100) is None
    for steps, seconds in windows:
        t.add(steps, seconds)
    assert t.tokens_per_s == pytest.approx(100 * 35 / 32.25)  # not 100 * 5 / 0.05 = 10,000 (the last window)
    ema = 0.1
    for per_step in (0.12, 3.0, 0.01):
        ema += 0.3 * (per_step - ema)
    t.pause(7.0)  # evaluations and checkpoints so far
    assert t.eta(200) == pytest.approx(200 * (ema + 7.0 / 35))
    # a resume carries the counts on (summary.json) and starts a new ETA
    state = t.state()
    r = Throughput(100, state["timed_steps"], state["timed_s"])
    assert r.tokens_per_s == pytest.approx(t.tokens_per_s) and r.eta(10) is None
    r.add(5, 1.0)
    assert r.tokens_per_s == pytest.approx(100 * 40 / 33.25) and r.eta(10) == pytest.approx(10 * 0.2)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("weight_decay", -1.0, "optim.weight_decay must be >= 0"),
        ("lr", 0.0, "optim.lr must be > 0"),
        ("lr", -1e-3, "optim.lr must be > 0"),
        ("lr", float("inf"), "optim.lr must be a finite number"),
        ("min_lr", 1.0, r"min_lr in \[0, lr\]"),
        ("min_lr", -1e-4, r"min_lr in \[0, lr\]"),
        ("beta1", 1.0, r"optim.beta1 must be in \[0, 1\)"),
        ("beta2", -0.1, r"optim.beta2 must be in \[0, 1\)"),
        ("eps", 0.0, "optim.eps must be > 0"),
        ("warmup_iters", -1, "optim.warmup_iters must be an integer >= 0"),
        ("lr_decay_iters", 50, "ends the decay before the warmup"),
        ("weight_decay", float("nan"), "optim.weight_decay must be a finite number"),
    ],
)
def test_optimizer_values_that_cannot_work_are_one_line(field, value, needle):
    with pytest.raises(UserError, match=needle):
        OptimConfig(**{"warmup_iters": 100, field: value})


def test_the_optimizer_configs_shipped_are_valid():
    import yaml

    from gptlab.training.config import from_mapping as build

    for path in sorted((ROOT / "configs" / "optim").glob("*.yaml")):
        build(OptimConfig, yaml.safe_load(path.read_text()), "optim")


def test_cli_arg_quotes_paths_so_hydra_and_the_shell_read_them_back():
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gptlab.training.loop import cli_arg

    parser = OverridesParser.create()
    for path in ["runs/2026-01-02_03-04-05_678", "/tmp/my run", "/tmp/a,b [c]", "/tmp/x=y"]:
        word = cli_arg("run", path)
        (arg,) = shlex.split(word)  # one shell word
        assert parser.parse_override(arg).value() == path, (path, word)
    assert cli_arg("run", "runs/a_b") == "run=runs/a_b"  # plain paths stay plain


def test_the_start_up_line_names_the_architecture():
    from gptlab.model import GPT, GPTConfig
    from gptlab.training.session import describe_model

    cfg = GPTConfig(vocab_size=65, n_layer=2, n_head=4, n_kv_head=1, n_embd=32, block_size=64, position="alibi",
                    window=16, attn_impl="auto")  # fmt: skip
    line = describe_model(cfg, GPT(cfg).pos, torch.device("cpu"))
    for part in (
        "2 layers",
        "4 heads / 1 KV heads (MQA)",
        "alibi positions",
        "window 16",
        "attn sdpa (auto)",
    ):
        assert part in line, line
    shaw = GPTConfig(vocab_size=65, n_layer=1, n_head=2, n_embd=32, block_size=16, position="relative")
    assert "attn explicit (relative value term)" in describe_model(shaw, GPT(shaw).pos, torch.device("cpu"))


# ---------------------------------------------------------------------------------------------- one step, bare
def _token_folder(folder: Path, vocab: int, n: int) -> Path:
    """A prepared-data folder of a learnable stream (0, 1, ..., vocab-1, 0, 1, ...) for the BatchLoader."""
    from gptlab.data.build import FORMAT

    folder.mkdir(parents=True)
    (np.arange(n) % vocab).astype(np.uint16).tofile(folder / "train.bin")
    meta = {"format": FORMAT, "vocab_size": vocab, "dtype": "uint16", "tokenizer": "ids", "eot_id": None}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "train.bin"


def test_train_step_on_a_bare_step_state_equals_a_step_written_out(tmp_path):
    """train_step needs a model, an optimizer, a loader and the two config sections: no run directory, summary,
    wandb or terminal. Its first steps equal a step written out here (lr schedule by hand, two micro-batches
    averaged, clip at 1, AdamW with decay on matrices only), and 40 steps on a repeating stream cut the loss."""
    import copy

    from gptlab.data import BatchLoader
    from gptlab.model import GPT, GPTConfig
    from gptlab.training.step import StepState, train_step

    path = _token_folder(tmp_path / "tokens", vocab=16, n=4096)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32, mlp="gelu"))
    ref = copy.deepcopy(model)
    tcfg = TrainConfig(batch_size=4, grad_accum=2, max_iters=40, grad_clip=1.0)
    ocfg = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_iters=2, weight_decay=0.1, fused=False)
    state = StepState(
        raw_model=model, optimizer=build_optimizer(model, ocfg, "cpu"), train=tcfg, optim=ocfg, device="cpu",
        loader=BatchLoader(path, block_size=16, batch_size=4, seed=5),
    )  # fmt: skip
    ref_loader = BatchLoader(path, block_size=16, batch_size=4, seed=5)  # the same stream
    matrices = [p for p in ref.parameters() if p.dim() >= 2]
    others = [p for p in ref.parameters() if p.dim() < 2]
    ref_opt = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
        lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
    )  # fmt: skip
    # warmup over 2 steps, then cosine from 1e-2 to 1e-3 over steps 2..40
    for k, lr in enumerate([0.5e-2, 1e-2, 1e-2, 1e-3 + 0.5 * (1 + math.cos(math.pi * 1 / 38)) * 9e-3]):
        train_step(state)
        for group in ref_opt.param_groups:
            group["lr"] = lr
        losses = []
        for _ in range(2):
            x, y = ref_loader.next()
            _, loss = ref(x, y)
            (loss / 2).backward()
            losses.append(loss.item())
        norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_opt.zero_grad()
        assert state.step == k + 1 and state.last["lr"] == pytest.approx(lr)
        assert state.last["loss"].item() == pytest.approx(sum(losses) / 2, rel=1e-5)
        assert state.last["grad_norm"].item() == pytest.approx(norm.item(), rel=1e-5)
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6), name
    first = state.last["loss"].item()
    while state.step < tcfg.max_iters:
        train_step(state)
    state.divergence.check()  # finite all the way
    assert state.last["loss"].item() < 0.5 * first


# ---------------------------------------------------------------------------------------------- RunConfig
def _composed(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize(
    "section, cls",
    [
        ("model", "gptlab.model.GPTConfig"),
        ("data", "gptlab.data.DataConfig"),
        ("train", "gptlab.training.config.TrainConfig"),
        ("optim", "gptlab.training.config.OptimConfig"),
        ("wandb", "gptlab.training.config.WandbConfig"),
    ],
)
def test_an_unknown_key_in_any_train_section_is_the_same_one_line(tmp_path, section, cls):
    """`+<section>.bogus=1` passes the command-line check (+ adds a key) and reaches train(): every section
    answers with the same line, listing the section's fields, before anything is written."""
    import dataclasses
    import importlib

    from hydra import compose, initialize_config_dir

    from gptlab.training.loop import train

    module, name = cls.rsplit(".", 1)
    valid = ", ".join(f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name)))
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+{section}.bogus=1", f"data.out_dir={tmp_path / 'data'}"])
    with pytest.raises(UserError) as e:
        train(cfg, tmp_path / "run")
    assert str(e.value) == f"unknown key(s) ['bogus'] in {section}; valid keys: {valid}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_the_run_config_is_typed_and_every_shipped_choice_builds_one():
    import dataclasses

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gptlab.model import GPT, GPTConfig
    from gptlab.training.config import RunConfig, WandbConfig
    from gptlab.training.session import with_data_vocab

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):  # once: composing is then cheap
        for group in ("model", "data", "train", "optim"):
            for choice in sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml")):
                needs = ["data.path=README.md"] if choice == "text_files" else []  # it has no default text
                composed = compose("config", overrides=[f"{group}={choice}", *needs])
                cfg = RunConfig.from_mapping(OmegaConf.to_container(composed, resolve=True))
                assert isinstance(cfg.model, GPTConfig) and isinstance(cfg.wandb, WandbConfig), choice
    cfg = RunConfig.from_mapping(_composed("optim.lr=1", "model.dropout=0", "+note=first", "seed=7"))
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and isinstance(cfg.model.dropout, float)
    assert cfg.model.vocab_size is None  # null: the data's vocabulary (training.session.with_data_vocab)
    with pytest.raises(UserError, match="model.vocab_size is null"):  # never a model of unknown vocabulary
        GPT(cfg.model)
    assert with_data_vocab(cfg.model, {"vocab_size": 65}).vocab_size == 65
    with pytest.raises(UserError, match=r"model.vocab_size=50 is smaller than the data's vocabulary \(65\)"):
        with_data_vocab(dataclasses.replace(cfg.model, vocab_size=50), {"vocab_size": 65})
    assert cfg.seed == 7 and cfg.extra["note"] == "first"  # a key added with + is kept, as before
    assert cfg.extra["compare"] == {
        "baseline": None
    }  # the sweep summary's section (gptlab/sweep/callback.py)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.n_layer=abc", "model.n_layer must be an integer, got 'abc'"),
        ("data.val_fraction=x", "data.val_fraction must be a number, got 'x'"),
        ("train.max_iters=1.5", "train.max_iters must be an integer, got 1.5"),
        ("optim.fused=maybe", "optim.fused must be auto, true or false, got 'maybe'"),
        ("wandb.mode=on", "wandb.mode must be disabled, offline or online, got 'on'"),
        ("seed=-1", "seed must be a non-negative integer, got -1"),
        ("seed=null", "seed must be a non-negative integer, got None"),
        ("init_from=[a]", "init_from must be a string or null, got ['a']"),
    ],
)
def test_the_run_config_names_the_key_of_a_wrong_value(override, message):
    from gptlab.training.config import RunConfig

    with pytest.raises(UserError) as e:
        RunConfig.from_mapping(_composed(override))
    assert str(e.value) == message


# ---------------------------------------------------------------------------------------------- Muon
def _muon_model(**kw):
    from gptlab.model import GPT, GPTConfig

    cfg = dict(vocab_size=37, block_size=8, n_layer=2, n_head=4, n_embd=32, mlp="gelu", tie_embeddings=False)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_muon_gets_the_blocks_matrices_and_adamw_the_rest():
    model = _muon_model(qk_norm=True, bias=True, position="learned")
    opt = build_optimizer(model, OptimConfig(name="muon", weight_decay=0.1, muon_weight_decay=0.3), "cpu")
    hidden = {
        f"blocks.{l}.{name}.weight"
        for l in range(2)
        for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc", "mlp.proj")
    }
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    decayed = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if name in hidden:
            assert id(p) in muon and id(p) not in decayed | plain, name
        else:  # tok_emb, pos.emb, the untied lm_head: AdamW with decay; norms, qk_norm gains, biases: without
            assert id(p) in (decayed if p.dim() >= 2 else plain) and id(p) not in muon, name
    assert len(muon) + len(decayed) + len(plain) == len(list(model.parameters()))
    assert {n for n, p in model.named_parameters() if id(p) in decayed} == {
        "tok_emb.weight",
        "pos.emb.weight",
        "lm_head.weight",
    }
    assert [g["weight_decay"] for g in opt.muon.param_groups] == [0.3]
    assert opt.param_groups == opt.muon.param_groups + opt.adamw.param_groups


_NS = (3.4445, -4.7750, 2.0315)  # the quintic Newton-Schulz coefficients torch.optim.Muon documents (a, b, c)


def _orthogonalise(G, steps=5):
    """Newton-Schulz as torch's Muon documents it: X = G / ||G||_F (transposed when tall), then `steps` times
    X <- a X + (b A + c A^2) X with A = X X^T. torch runs it in bfloat16, so each product is rounded to bf16."""
    bf = lambda t: t.bfloat16().float()  # noqa: E731
    a, b, c = _NS
    X = bf(G)
    tall = X.shape[0] > X.shape[1]
    X = X.T if tall else X
    X = bf(X / max(float(bf(X.norm())), 1e-7))
    for _ in range(steps):
        A = bf(X @ X.T)
        X = bf(a * X + bf(b * A + c * (A @ A)) @ X)
    return X.T if tall else X


def test_muon_and_adamw_steps_match_the_formulas_written_here():
    """Three steps with fixed gradients in warmup: each block matrix moves as Muon's documented update
    (Nesterov momentum, Newton-Schulz, decoupled weight decay, lr * sqrt(max(1, rows/cols))), at muon_lr
    scaled by the schedule; every other parameter as AdamW."""
    from gptlab.training.optim import set_lr

    model = _muon_model(qk_norm=True)
    with torch.no_grad():  # weights of order 1, so weight decay moves them visibly
        for p in model.parameters():
            p.normal_()
    cfg = OptimConfig(name="muon", lr=1e-2, min_lr=1e-3, warmup_iters=4, weight_decay=0.5, muon_lr=0.05,
                      muon_weight_decay=2.0, fused=False)  # fmt: skip
    opt = build_optimizer(model, cfg, "cpu")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(5)
    grads = [{n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()} for _ in range(3)]
    for t, g in enumerate(grads):
        lr = set_lr(opt, t, cfg, 100)
        assert lr == pytest.approx(cfg.lr * (t + 1) / 4)
        for n, p in model.named_parameters():
            p.grad = g[n].clone()
        opt.step()
    muon_ids = {id(p) for p in opt.muon.param_groups[0]["params"]}
    mu, b1, b2 = cfg.muon_momentum, cfg.beta1, cfg.beta2
    for n, p in model.named_parameters():
        W = start[n].clone()
        if id(p) in muon_ids:
            buf = torch.zeros_like(W)
            for t, g in enumerate(grads):
                lr = cfg.muon_lr * (t + 1) / 4
                # torch keeps the momentum as an average, B_t = mu B_{t-1} + (1 - mu) g_t: its documented
                # B_t = mu B_{t-1} + g_t times (1 - mu), which the normalisation in Newton-Schulz cancels
                buf = mu * buf + (1 - mu) * g[n]
                O = _orthogonalise((1 - mu) * g[n] + mu * buf)  # Nesterov: g_t + mu B_t, times (1 - mu)
                rows, cols = W.shape
                W = W * (1 - lr * cfg.muon_weight_decay) - lr * math.sqrt(max(1, rows / cols)) * O
            # bf16 rounding differences stay below 0.01 * muon_lr here; no Nesterov, or 4 Newton-Schulz steps
            # instead of 5, would be off by more than 0.08 * muon_lr, weight decay by 8 * muon_lr
            torch.testing.assert_close(p.detach(), W, atol=0.02 * cfg.muon_lr, rtol=0, msg=n)
        else:
            wd = cfg.weight_decay if W.dim() >= 2 else 0.0
            m, v = torch.zeros_like(W), torch.zeros_like(W)
            for t, g in enumerate(grads):
                lr = cfg.lr * (t + 1) / 4
                m, v = b1 * m + (1 - b1) * g[n], b2 * v + (1 - b2) * g[n] ** 2
                mhat, vhat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
                W = W * (1 - lr * wd) - lr * mhat / (vhat.sqrt() + cfg.eps)
            torch.testing.assert_close(p.detach(), W, atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(muon_nesterov=False, muon_weight_decay=0.5, muon_adjust_lr="match_rms_adamw", muon_ns_steps=3),
    ],
)
def test_batched_muon_steps_as_torchs_muon(kw):
    """BatchedMuon (one Newton-Schulz per matrix shape) moves every matrix as torch.optim.Muon (one per matrix)
    over three steps: square, wide and tall matrices, a matrix without a gradient left alone. Newton-Schulz
    in float32, or one iteration fewer, would be off by 3x the tolerance or more."""
    from gptlab.training.optim import BatchedMuon

    cfg = OptimConfig(name="muon", muon_lr=0.05, **kw)
    settings = dict(
        lr=cfg.muon_lr, weight_decay=cfg.muon_weight_decay, momentum=cfg.muon_momentum,
        nesterov=cfg.muon_nesterov, ns_steps=cfg.muon_ns_steps, adjust_lr_fn=cfg.muon_adjust_lr,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    shapes = [(32, 32), (32, 32), (96, 32), (32, 96), (32, 96), (16, 48)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    theirs = [torch.nn.Parameter(w.clone()) for w in start]
    opts = [BatchedMuon(ours, **settings), torch.optim.Muon(theirs, **settings)]
    for _ in range(3):
        grads = [torch.randn(s, generator=gen) * 10 for s in shapes]
        for params, opt in zip((ours, theirs), opts):
            for p, g in zip(params[:-1], grads):  # the last matrix gets no gradient
                p.grad = g.clone()
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), atol=2e-3 * cfg.muon_lr, rtol=0)
    assert torch.equal(ours[-1].detach(), start[-1])
    assert opts[0].state_dict()["state"].keys() == opts[1].state_dict()["state"].keys()


def test_muon_ns_dtype_auto_follows_the_measured_speed(monkeypatch):
    """optim.muon_ns_dtype=auto times one Newton-Schulz iteration on the model's matrix shapes in both precisions
    (a fake clock here) and leaves torch's bfloat16 only for a float32 at least NS_FLOAT32_GAIN times as fast;
    GPUs keep bfloat16 untimed. A given precision is used as given, and it lives in the param group."""
    from types import SimpleNamespace

    from gptlab.training import optim

    clock, cost, seen = [0.0], {}, set()

    def fake_ns(mats, coefficients, steps, eps, dtype):
        assert steps == 1
        seen.add(tuple(tuple(m.shape) for m in mats))
        clock[0] += cost[dtype]

    monkeypatch.setattr(optim, "newton_schulz", fake_ns)
    monkeypatch.setattr(optim, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    shapes = [torch.Size([8, 8]), torch.Size([24, 8])]
    for bf16, fp32, picked in [(25.0, 1.0, "float32"), (2.0, 1.0, "float32"), (1.9, 1.0, "bfloat16"),
                               (0.5, 1.0, "bfloat16")]:  # fmt: skip
        optim._ns_dtype_measured.cache_clear()
        cost.update({torch.bfloat16: bf16, torch.float32: fp32})
        assert optim.ns_dtype_for(shapes, "cpu") == picked, (bf16, fp32)
    assert seen == {((8, 8), (24, 8))}  # the shapes asked about
    assert optim.ns_dtype_for(shapes, "cuda") == "bfloat16"
    optim._ns_dtype_measured.cache_clear()
    model = _muon_model()
    for setting, want in [("auto", "float32"), ("bfloat16", "bfloat16")]:  # bf16 costs 0.5 x 4 above: float32
        cost.update({torch.bfloat16: 4.0, torch.float32: 1.0})
        opt = build_optimizer(model, OptimConfig(name="muon", muon_ns_dtype=setting), "cpu")
        assert [g["ns_dtype"] for g in opt.muon.param_groups] == [want]
        assert opt.state_dict()["muon"]["param_groups"][0]["ns_dtype"] == want


def test_muon_in_float32_is_newton_schulz_in_float32():
    """ns_dtype=float32 orthogonalises in float32: one step equals the documented update with float32 products
    (to float32 rounding), and a state saved without ns_dtype (torch's Muon) resumes in bfloat16."""
    import copy

    from gptlab.training.optim import BatchedMuon

    gen = torch.Generator().manual_seed(4)
    shapes = [(32, 32), (96, 32), (32, 96)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    params = [torch.nn.Parameter(w.clone()) for w in start]
    opt = BatchedMuon(params, ns_dtype="float32", lr=0.1, weight_decay=0.0, momentum=0.9, nesterov=True)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    a, b, c = _NS
    for p, w, g in zip(params, start, grads):
        u = 0.1 * g + 0.9 * (0.1 * g)  # Nesterov on a zero buffer: (1 - mu) g + mu (1 - mu) g
        X = u.T if u.shape[0] > u.shape[1] else u
        X = X / X.norm()
        for _ in range(5):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        X = X.T if u.shape[0] > u.shape[1] else X
        expected = w - 0.1 * math.sqrt(max(1, w.shape[0] / w.shape[1])) * X
        torch.testing.assert_close(p.detach(), expected, atol=1e-5, rtol=0)
    # a state saved without ns_dtype (by torch's Muon, or before gptlab had it) steps on in bfloat16, as torch's
    saved = opt.state_dict()
    del saved["param_groups"][0]["ns_dtype"]
    settings = dict(lr=0.1, weight_decay=0.0, momentum=0.9, nesterov=True)
    ours = BatchedMuon(
        [torch.nn.Parameter(p.detach().clone()) for p in params], ns_dtype="float32", **settings
    )
    theirs = torch.optim.Muon([torch.nn.Parameter(p.detach().clone()) for p in params], **settings)
    for o in (ours, theirs):
        o.load_state_dict(copy.deepcopy(saved))  # each its own buffers (a state_dict holds the live tensors)
        for p, g in zip(o.param_groups[0]["params"], grads):
            p.grad = -g
        o.step()
    for p, q in zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"]):
        torch.testing.assert_close(p.detach(), q.detach(), atol=2e-4, rtol=0)


def test_muon_state_round_trips_through_a_weights_only_file(tmp_path):
    """Save both optimizers' states after two steps, load them into a fresh copy: the third step is identical."""
    cfg = OptimConfig(name="muon", warmup_iters=0)
    models = [_muon_model(), None]
    models[1] = _muon_model()
    models[1].load_state_dict(models[0].state_dict())
    opts = [build_optimizer(m, cfg, "cpu") for m in models]
    x, y = torch.randint(0, 37, (2, 8)), torch.randint(0, 37, (2, 8))

    def step(m, opt):
        opt.zero_grad()
        m(x, y)[1].backward()
        opt.step()

    for _ in range(2):
        step(models[0], opts[0])
    torch.save({"model": models[0].state_dict(), "optimizer": opts[0].state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(saved["optimizer"]) == {"muon", "adamw"}
    assert saved["optimizer"]["muon"]["state"] and saved["optimizer"]["adamw"]["state"]
    models[1].load_state_dict(saved["model"])
    opts[1].load_state_dict(saved["optimizer"])
    for m, opt in zip(models, opts):
        step(m, opt)
    for (n, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), n
    with pytest.raises(KeyError):  # an AdamW-only state does not fit (train.py turns this into one line)
        opts[1].load_state_dict(torch.optim.AdamW(models[1].parameters()).state_dict())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(name="sgd"), "optim.name must be one of adamw, muon"),
        (dict(muon_lr=0), "optim.muon_lr"),
        (dict(muon_momentum=1.0), "optim.muon_momentum"),
        (dict(muon_ns_steps=0), "optim.muon_ns_steps"),
        (dict(muon_weight_decay=-1), "optim.muon_weight_decay"),
        (dict(muon_adjust_lr="rms"), "optim.muon_adjust_lr must be one of original, match_rms_adamw"),
        (dict(muon_ns_dtype="fp16"), "optim.muon_ns_dtype must be one of auto, bfloat16, float32"),
    ],
)
def test_bad_muon_settings_are_one_line(kw, match):
    with pytest.raises(UserError, match=match) as e:
        OptimConfig(**kw)
    assert "\n" not in str(e.value)
