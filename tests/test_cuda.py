"""The GPU path, on a CUDA GPU only (every test here is marked ``cuda`` and skipped without one).

    python -m pytest -m cuda            # on a machine with a CUDA GPU: this file only

sdpa == flex == explicit (bf16 tolerance and fp32), flex gradients, flex memory linear in T, the flash kernel
on the fused path, cache == no-cache greedy (fp32) and the CUDA-graph decode step, bit-exact resume with
train.deterministic=true (and within a tolerance without it), torchrun + NCCL with one process, float16
through the gradient scaler. Each test is small; the whole file takes a few minutes, most of it compiling the
FlexAttention kernels (one per scheme and shape).
"""

import json
import os

import pytest
import torch

from gptlab.model import GPT, POSITIONS, GPTConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")
T = 256  # two 128-wide FlexAttention blocks
SCHEMES = [*POSITIONS, "relative-keys-only"]


@pytest.fixture(autouse=True)
def _exact_fp32_and_room_to_compile():
    """fp32 means fp32 (training turns TF32 on process-wide), and room for one FlexAttention compile per
    scheme and shape (dynamo's default limit of 8 would fall back to the unfused kernel part way through)."""
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch._dynamo.config.patch(**{limit: 256}):
        yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def gpu_model(position="rope", n_kv_head=4, window=None, std=0.05, **kw):
    """A small model on the GPU (head size 32), weights shaken by ``std`` so attention is far from uniform."""
    if position == "relative-keys-only":
        position, kw = "relative", {"rel_values": False, **kw}
    cfg = dict(vocab_size=97, block_size=T, n_layer=2, n_head=4, n_embd=128, position=position)
    m = GPT(GPTConfig(n_kv_head=n_kv_head, window=window, **{**cfg, **kw})).to(CUDA).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * std)
    return m


def rel_err(a, b) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------------------------ attention
CASES = [(s, 4, None) for s in SCHEMES] + [
    ("alibi", 2, None), ("alibi", 1, None), ("alibi", 2, 64), ("t5", 1, 64), ("rope", 2, 64),
]  # fmt: skip


@pytest.mark.parametrize("position,kv,window", CASES)
def test_sdpa_flex_explicit_agree(position, kv, window):
    """bf16 autocast: each path within bf16 rounding of the fp32 explicit math; fp32: all three agree tightly."""
    m = gpu_model(position, kv, window)
    idx = torch.randint(0, 97, (2, T), device=CUDA)
    with torch.no_grad():
        ref, _ = m(idx, attn_impl="explicit")
        for impl in ("sdpa", "flex", "explicit"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                low, _ = m(idx, attn_impl=impl)
            assert rel_err(low, ref) < 3e-2, (impl, rel_err(low, ref))
            full, _ = m(idx, attn_impl=impl)
            assert rel_err(full, ref) < 2e-3, (impl, rel_err(full, ref))


@pytest.mark.parametrize("position", ["alibi", "t5", "relative-keys-only", "rope-window"])
def test_flex_gradients_match_explicit(position):
    from gptlab.model.flex import LEARNED_BIAS_GRAD

    if position in ("t5", "relative-keys-only") and not LEARNED_BIAS_GRAD:
        pytest.skip("gradients into a learned FlexAttention bias need torch >= 2.6")
    scheme, window = ("rope", 64) if position == "rope-window" else (position, None)
    m = gpu_model(scheme, 2, window).train()
    idx = torch.randint(0, 97, (2, T), device=CUDA)
    grads = {}
    for impl in ("flex", "explicit"):
        m.zero_grad(set_to_none=True)
        _, loss = m(idx, idx, attn_impl=impl)
        loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert grads["flex"].keys() == grads["explicit"].keys()
    for name, g in grads["explicit"].items():
        assert rel_err(grads["flex"][name], g) < 1e-3, name


def test_auto_trains_biased_schemes_on_flex(monkeypatch):
    import gptlab.model.flex as flex

    calls = []
    real = flex.flex_attend
    monkeypatch.setattr(
        "gptlab.model.attention.flex_attend", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    m = gpu_model("alibi").train()
    idx = torch.randint(0, 97, (2, T), device=CUDA)
    m(idx, idx)[1].backward()
    assert len(calls) == m.config.n_layer
    calls.clear()
    gpu_model("rope").train()(idx, idx)[1].backward()  # no bias, no window: sdpa (flash)
    assert calls == []


@pytest.mark.parametrize("position", ["alibi", "t5"])
def test_flex_memory_grows_linearly(position):
    """One attention layer, fwd + bwd in bf16 at T = 8192: flex's extra memory stays far below one
    (B, nh, T, T) float32 score tensor (1 GiB here), which the explicit path and sdpa's mask are made of."""
    from gptlab.model.attention import CausalSelfAttention
    from gptlab.model.positions import build_position

    if position == "t5":
        from gptlab.model.flex import LEARNED_BIAS_GRAD

        if not LEARNED_BIAS_GRAD:
            pytest.skip("gradients into a learned FlexAttention bias need torch >= 2.6")
    n = 8192
    cfg = GPTConfig(n_embd=256, n_head=4, block_size=n, n_layer=1, position=position, attn_impl="flex")
    attn, pos = CausalSelfAttention(cfg, 0).to(CUDA), build_position(cfg).to(CUDA)
    x = torch.randn(1, n, 256, device=CUDA, requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        attn(x, pos).float().square().mean().backward()  # compile and warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        attn(x, pos).float().square().mean().backward()
        torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    dense = 1 * 4 * n * n * 4
    assert extra < dense / 8, f"{extra / 2**20:.0f} MiB"


def test_fused_path_runs_the_flash_kernel():
    """No bias, no window: sdpa gets is_causal and no mask, which the flash kernel accepts (forward and
    backward in bf16); restricting sdpa to flash would raise if the path needed another kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m = gpu_model("rope").train()
    idx = torch.randint(0, 97, (2, T), device=CUDA)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = m(idx, idx, attn_impl="sdpa")
        loss.backward()
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("position", POSITIONS)
def test_cache_equals_no_cache_greedy_fp32(position):
    m = gpu_model(position, 2, std=0.5, block_size=32)
    prompt = torch.randint(0, 97, (2, 5), device=CUDA)
    a = m.generate(prompt, 60, temperature=0, use_cache=True)  # well past block_size
    b = m.generate(prompt, 60, temperature=0, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("position", ["alibi", "learned"])
def test_cuda_graph_decode_equals_eager(position):
    """compile=True on CUDA: the fixed-shape step compiled with mode reduce-overhead (CUDA graphs)."""
    m = gpu_model(position, 2, std=0.5, block_size=32)
    prompt = torch.randint(0, 97, (2, 5), device=CUDA)
    eager = m.generate(prompt, 60, temperature=0)
    assert torch.equal(m.generate(prompt, 60, temperature=0, compile=True), eager)
    assert torch.equal(m.generate(prompt, 60, temperature=0, compile=True), eager)  # replayed


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared") / "shakespeare_char")


@pytest.fixture
def keep_determinism_setting(monkeypatch):
    """train.deterministic switches torch's process-wide mode on: switch it back after the test."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _straight_and_resumed(tmp_path, data_dir, *extra):
    from test_train import cfg_with, rows

    from gptlab.training.loop import train

    gpu = ["train.device=cuda", "model.dropout=0.1", *extra]  # dropout: the CUDA RNG state matters too
    train(cfg_with(data_dir, *gpu), tmp_path / "straight")
    first = train(cfg_with(data_dir, *gpu, "train.stop_after_iters=6"), tmp_path / "resumed")
    assert first["status"] == "interrupted"
    train(cfg_with(data_dir, *gpu, "train.resume=true"), tmp_path / "resumed")
    a, b = rows(tmp_path / "straight", "train"), rows(tmp_path / "resumed", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    wa = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["model"]
    return [r["train_loss"] for r in a], [r["train_loss"] for r in b], wa, wb


def test_resume_is_bit_exact_with_deterministic_kernels(tmp_path, data_dir, keep_determinism_setting):
    la, lb, wa, wb = _straight_and_resumed(tmp_path, data_dir, "train.deterministic=true")
    assert la == lb
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_without_deterministic_kernels_is_close(tmp_path, data_dir):
    """Without train.deterministic a GPU may sum in another order from run to run (atomic adds in some
    backward kernels), so a resumed run is only equal to a straight one up to float rounding."""
    la, lb, wa, wb = _straight_and_resumed(tmp_path, data_dir)
    assert lb == pytest.approx(la, rel=1e-2)
    assert all(torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-2, atol=1e-3) for k in wa)


def test_torchrun_one_process_nccl_trains_and_resumes(tmp_path, data_dir):
    from test_train import cfg_with, rows, torchrun_one

    from gptlab.training.loop import train

    train(cfg_with(data_dir, "train.max_iters=1", "train.device=cuda"), tmp_path / "warm")  # data, once
    run = tmp_path / "nccl"
    r = torchrun_one(data_dir, run, "train.device=cuda", "train.stop_after_iters=6", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun_one(data_dir, run, "train.device=cuda", "train.resume=true", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 1 and summary["device"] == "cuda:0"
    assert [r["step"] for r in rows(run, "train")] == list(range(1, 13))


def test_float16_trains_through_the_gradient_scaler_on_cuda(tmp_path, data_dir):
    from test_train import cfg_with, rows

    from gptlab.training.loop import train

    fp32 = train(cfg_with(data_dir, "train.device=cuda", "train.dtype=float32"), tmp_path / "fp32")
    fp16 = train(cfg_with(data_dir, "train.device=cuda", "train.dtype=float16"), tmp_path / "fp16")
    assert fp32["status"] == fp16["status"] == "finished" and fp16["dtype"] == "float16"
    ckpt = torch.load(tmp_path / "fp16" / "ckpt.pt", weights_only=True)
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 1
    g32 = [r["grad_norm"] for r in rows(tmp_path / "fp32", "train")]
    g16 = [r["grad_norm"] for r in rows(tmp_path / "fp16", "train")]
    assert g16[0] == pytest.approx(g32[0], rel=0.05)  # unscaled before clipping: the true norm
    l32 = [r["train_loss"] for r in rows(tmp_path / "fp32", "train")]
    l16 = [r["train_loss"] for r in rows(tmp_path / "fp16", "train")]
    assert l16 == pytest.approx(l32, rel=0.02) and l16[-1] < l16[0]
