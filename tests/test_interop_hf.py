"""interop: Hugging Face <-> gptlab round trips (configs, tensors, logits, greedy tokens), refusals, tokenizers.

Tiny random models built here (no download). The independent references are transformers' own modules:
their state dicts, their forward passes and their generate().
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

from gptlab.interop.hf import export_hf, load_hf_run, load_pretrained, to_hf_model  # noqa: E402
from gptlab.interop.hf_config import family_for, from_hf_config, to_hf_config  # noqa: E402
from gptlab.interop.hf_tokenizer import PROBE, gpt2_tokenizer_json, ids_tokenizer_json, tokenizer_meta_for  # noqa: E402
from gptlab.interop.hf_weights import from_hf, to_hf  # noqa: E402
from gptlab.open_run import is_hf_source, load_run  # noqa: E402
from gptlab.rundir.load import Run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHAR_META = {"tokenizer": "char", "chars": CHARS, "vocab_size": len(CHARS), "eot_id": None}


def noised(module, std=0.2):
    """Non-trivial values everywhere (HF init zeroes biases and sets norm weights to 1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module.eval()


def hf_model(kind: str, V=61):
    """A tiny random HF model of each family we map."""
    if kind.startswith("gpt2"):
        cfg = transformers.GPT2Config(
            vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=48,
            activation_function="gelu_new", tie_word_embeddings=kind != "gpt2-untied",
        )  # fmt: skip
        return noised(transformers.GPT2LMHeadModel(cfg))
    if kind.startswith("llama"):
        cfg = transformers.LlamaConfig(
            vocab_size=V, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
            tie_word_embeddings=kind == "llama-bias-tied", attention_bias=kind == "llama-bias-tied",
            mlp_bias=kind == "llama-bias-tied",
        )  # fmt: skip
        return noised(transformers.LlamaForCausalLM(cfg))
    cfg = transformers.MistralConfig(
        vocab_size=V, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=32, sliding_window=6,
    )  # fmt: skip
    return noised(transformers.MistralForCausalLM(cfg))


def perturbed(model: GPT) -> GPT:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # norms away from 1, biases away from 0
    return model.eval()


# ------------------------------------------------------------------------------------------ HF -> us -> HF
@pytest.mark.parametrize("kind", ["gpt2", "gpt2-untied", "llama-gqa", "llama-bias-tied", "mistral"])
def test_hf_to_gptlab_to_hf_gives_identical_tensors(kind):
    hf = hf_model(kind)
    family, values = from_hf_config(hf.config.to_dict())
    cfg = GPTConfig(**values)
    ours = GPT(cfg).eval()
    ours.load_state_dict(from_hf(family, cfg, hf.state_dict()))
    back = to_hf(family, cfg, ours.state_dict())
    theirs = hf.state_dict()
    assert set(back) == set(theirs)
    for k, v in theirs.items():
        assert torch.equal(back[k], v), k
    # and the config maps back to the same architecture (a bias-free Llama as Mistral with a window as long
    # as its context: the same model up to max_position_embeddings, and our sampler's past it)
    fam2, kwargs = to_hf_config(cfg)
    assert fam2 == ("mistral" if kind == "llama-gqa" else family)
    again = getattr(transformers, CONFIGS[fam2])(**kwargs).to_dict()
    if kind == "llama-gqa":  # (Mistral has no attention_bias field: it has no biases)
        assert (
            again["sliding_window"] == hf.config.max_position_embeddings == again["max_position_embeddings"]
        )
    for key in ("vocab_size", "n_layer", "num_hidden_layers", "num_key_value_heads", "tie_word_embeddings",
                "n_inner", "intermediate_size", "activation_function", "rope_parameters",
                *(["attention_bias"] if fam2 == family else [])):  # fmt: skip
        assert again.get(key) == hf.config.to_dict().get(key), key
    if kind == "mistral":
        assert again["sliding_window"] == hf.config.sliding_window
    idx = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ us -> HF -> us
SHAPES = {
    "gpt2-gelu-tanh": dict(position="learned", norm="layernorm", mlp="gelu_tanh", bias=True),
    "gpt2-exact-gelu-nobias-untied": dict(position="learned", norm="layernorm", mlp="gelu", bias=False, tie_embeddings=False),
    "gpt2-relu2-gqa": dict(position="learned", norm="layernorm", mlp="relu2", bias=True, n_kv_head=2),
    "gpt2-attn-only": dict(position="learned", norm="layernorm", mlp="none", bias=False),
    "mistral-gqa": dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, rope_theta=500.0),
    "llama-mqa-bias-untied": dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, bias=True, tie_embeddings=False),
    "mistral-attn-only": dict(position="rope", norm="rmsnorm", mlp="none", n_kv_head=2),
    "llama-attn-only-bias": dict(position="rope", norm="rmsnorm", mlp="none", n_kv_head=2, bias=True),
    "mistral-window": dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, window=5),
}  # fmt: skip
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
CONFIGS = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "mistral": "MistralConfig"}


@pytest.mark.parametrize("name", list(SHAPES))
def test_gptlab_to_hf_to_gptlab_gives_the_same_logits(name, tmp_path):
    cfg = GPTConfig(vocab_size=67, block_size=24, n_layer=2, n_head=4, n_embd=32, mlp_hidden=40, norm_eps=1e-5,
                    **SHAPES[name])  # fmt: skip
    ours = perturbed(GPT(cfg))
    hf = to_hf_model(ours)
    assert type(hf).__name__ == CLASSES[name.split("-")[0]]
    hf.save_pretrained(tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    (tmp_path / "hf" / "tokenizer.json").write_text(
        ids_tokenizer_json(cfg.vocab_size)
    )  # not GPT-2's vocabulary
    run = load_hf_run(str(tmp_path / "hf"))
    back = run.model
    assert back.config.mlp == cfg.mlp and back.config.position == cfg.position  # mlp=none comes back as none
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    with torch.no_grad():
        ref = ours(idx)[0]
        torch.testing.assert_close(theirs(idx).logits, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(back(idx)[0], ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            back.attention_patterns(idx), ours.attention_patterns(idx), rtol=1e-5, atol=1e-6
        )


def test_greedy_tokens_of_an_exported_then_reloaded_model_equal_ours_past_block_size(tmp_path):
    """Past block_size our sampler keeps a window of block_size keys (model/generate.py); the export says so to
    transformers (Mistral's sliding_window), so HF's generate gives our tokens at every length."""
    cfg = GPTConfig(vocab_size=len(CHARS), block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                    position="rope", norm="rmsnorm", mlp="swiglu")  # fmt: skip
    ours = perturbed(GPT(cfg))
    run = Run(ours, None, CHAR_META, {}, {}, tmp_path / "ckpt.pt", tmp_path, 0)
    rep = export_hf(run, tmp_path / "out")
    assert rep["class"] == "MistralForCausalLM" and rep["tokenizer"] and rep["gaps"]["transformers"] < 1e-5
    assert rep["note"] is None
    prompt = torch.tensor([[CHARS.index(c) for c in "ROMEO:"]])
    want = ours.generate(prompt, 50, temperature=0)  # 56 tokens: 40 past block_size
    assert torch.equal(ours.generate(prompt, 50, temperature=0, use_cache=False), want)
    reloaded = load_run(tmp_path / "out")  # an HF directory: read through interop
    assert torch.equal(reloaded.model.generate(prompt, 50, temperature=0), want)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert hf.config.sliding_window == hf.config.max_position_embeddings == 16
    got = hf.generate(prompt, max_new_tokens=50, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(got, want)
    # its forward over 56 tokens is our forward with the sampler's window
    with torch.no_grad():
        torch.testing.assert_close(hf(want).logits, ours(want, window=16)[0], rtol=1e-4, atol=1e-4)
    # the exported char tokenizer is ours: same ids, same text
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "ROMEO: But, soft!\nWhat light?"
    assert tok(text).input_ids == reloaded.tokenizer.encode(text) == [CHARS.index(c) for c in text]
    assert tok.decode(tok(text).input_ids) == text


def test_a_llama_export_says_where_it_stops_agreeing_and_agrees_up_to_there(tmp_path):
    """RoPE with biases is LlamaForCausalLM, which has no window: the export's note names block_size, and greedy
    tokens agree on sequences up to block_size."""
    cfg = GPTConfig(vocab_size=len(CHARS), block_size=16, n_layer=2, n_head=4, n_embd=32, bias=True,
                    position="rope", norm="rmsnorm", mlp="swiglu")  # fmt: skip
    ours = perturbed(GPT(cfg))
    rep = export_hf(Run(ours, None, CHAR_META, {}, {}, tmp_path / "c.pt", tmp_path, 0), tmp_path / "out")
    assert rep["class"] == "LlamaForCausalLM"
    assert "past block_size=16 tokens" in rep["note"] and "up to 16 tokens" in rep["note"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    prompt = torch.tensor([[CHARS.index(c) for c in "ROMEO:"]])
    got = hf.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(got, ours.generate(prompt, 10, temperature=0))


# ------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "kw, field, nearest",
    [
        (dict(position="alibi"), "model.position=alibi", "position=rope"),
        (dict(position="sinusoidal"), "model.position=sinusoidal", "position=learned"),
        (dict(position="t5"), "model.position=t5", "position=rope"),
        (dict(position="relative"), "model.position=relative", "position=rope"),
        (dict(position="none"), "model.position=none", "position=rope"),
        (dict(position="rope", norm="layernorm", mlp="swiglu"), "model.norm=layernorm", "norm=rmsnorm"),
        (dict(position="rope", norm="rmsnorm", mlp="gelu"), "model.mlp=gelu", "mlp=swiglu"),
        (dict(position="learned", norm="layernorm", mlp="swiglu"), "model.mlp=swiglu", "mlp=gelu_tanh"),
        (dict(position="learned", norm="rmsnorm", mlp="gelu"), "model.norm=rmsnorm", "norm=layernorm"),
        (dict(position="learned", norm="layernorm", mlp="gelu", window=4), "model.window=4", "window=null"),
        (
            dict(position="rope", norm="rmsnorm", mlp="swiglu", window=4, bias=True),
            "model.bias=true",
            "bias=false",
        ),
        (
            dict(position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True),
            "model.qk_norm=true",
            "qk_norm=false",
        ),
        (
            dict(position="learned", mlp="gelu", logit_softcap=30.0),
            "model.logit_softcap=30.0",
            "logit_softcap=null",
        ),
    ],
)
def test_export_of_an_unmappable_architecture_is_one_line_naming_field_and_nearest(kw, field, nearest):
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, **kw)
    with pytest.raises(UserError) as e:
        family_for(cfg)
    msg = str(e.value)
    assert "\n" not in msg and field in msg and f"nearest mappable choice: {nearest}" in msg


def test_a_window_learned_positions_never_reach_is_exported_as_plain_gpt2():
    cfg = GPTConfig(
        vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, position="learned", window=16
    )
    assert family_for(cfg) == "gpt2"


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: transformers.GPT2Config(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (lambda: transformers.GPT2Config(activation_function="quick_gelu"), "activation_function"),
        (lambda: transformers.LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
         "rope_scaling"),
        (lambda: transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=32), "head_dim"),
        (lambda: transformers.LlamaConfig(hidden_act="gelu"), "hidden_act"),
        (lambda: transformers.LlamaConfig(attention_bias=True, mlp_bias=False), "mlp_bias"),
        (lambda: transformers.GPTNeoXConfig(), "model_type='gpt_neox'"),
    ],
)  # fmt: skip
def test_a_hf_config_we_cannot_express_is_one_line_naming_the_field(make, field):
    with pytest.raises(UserError) as e:
        from_hf_config(make().to_dict())
    assert field in str(e.value) and "\n" not in str(e.value)


def test_loading_such_a_directory_names_the_source_and_the_field(tmp_path):
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_positions=16, n_embd=16, n_layer=1, n_head=2, scale_attn_by_inverse_layer_idx=True))  # fmt: skip
    hf.save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"scale_attn_by_inverse_layer_idx=True") as e:
        load_run(tmp_path)
    assert str(tmp_path) in str(e.value)


def _edited_dir(tmp_path, family: str, **edits) -> Path:
    """A tiny saved HF model whose config.json is then edited by hand (as a broken download might be)."""
    if family == "gpt2":
        hf = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=61, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        )
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=16))  # fmt: skip
    d = tmp_path / f"{family}-edited"
    hf.save_pretrained(d)
    (d / "tokenizer.json").write_text(ids_tokenizer_json(61))
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(edits)
    cfg.pop("head_dim", None)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize(
    "family, edits, msg",
    [
        ("gpt2", dict(n_embd=32), r"model.safetensors: the weights do not match the model its config describes "
         r"\(.*tok_emb.weight: \(61, 16\) in the file, \(61, 32\) in the model.*config.json describes another model"),
        ("llama", dict(hidden_size=32), r"the weights do not match .*config.json describes another model"),
        ("llama", dict(num_attention_heads=0), r"config.json has num_attention_heads=0; it must be a positive integer"),
        ("gpt2", dict(n_head=0), r"config.json has n_head=0; it must be a positive integer"),
        ("llama", dict(num_attention_heads=3), r"config.json cannot be read by transformers \(The hidden size \(16\) "
         r"is not a multiple of the number of attention heads \(3\)"),
        ("gpt2", dict(n_head=3), r"n_embd=16 is not divisible by model.n_head=3"),
    ],
)  # fmt: skip
def test_a_directory_whose_config_does_not_fit_is_one_line_from_the_shared_loader(
    tmp_path, family, edits, msg
):
    """load_pretrained: what sample.py, heads.py, export.py and train.py init_from= all read through."""
    d = _edited_dir(tmp_path, family, **edits)
    with pytest.raises(UserError, match=msg) as e:
        load_pretrained(str(d))
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_sample_py_on_a_config_transformers_refuses_is_one_line(tmp_path):
    d = _edited_dir(tmp_path, "llama", num_attention_heads=3)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "sample.py", f"run={d}", "prompt=1 2", "max_new_tokens=2"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "is not a multiple of the number of attention heads (3)" in p.stderr


# ------------------------------------------------------------------------------------------ sources
def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "hfdir").mkdir()
    (tmp_path / "hfdir" / "config.json").write_text("{}")
    (tmp_path / "rundir").mkdir()
    (tmp_path / "rundir" / "ckpt.pt").write_bytes(b"")
    for s in ("gpt2", "openai-community/gpt2", "HuggingFaceTB/SmolLM-135M", "hfdir"):
        assert is_hf_source(s), s
    for s in ("runs/x", "runs/typo", "rundir", "best.pt", "./gpt2", "/abs/path", "a/b/c", "x.json"):
        assert not is_hf_source(s), s


def test_an_offline_hub_id_fails_in_one_line(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "WANDB_MODE": "disabled",
    }
    p = subprocess.run([sys.executable, "sample.py", "run=gpt2"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("error: 'gpt2' is not a local directory") and "HF_HUB_OFFLINE" in lines[0]
    assert not (tmp_path / "hf_home" / "hub").exists() or not any((tmp_path / "hf_home" / "hub").iterdir())


@pytest.mark.slow
def test_a_hub_id_in_the_hugging_face_cache_loads_offline_in_sample_and_heads(tmp_path, monkeypatch):
    """`python heads.py run=gpt2` with the weights in the cache: a tiny GPT-2 laid out as the hub cache keeps it."""
    snapshot = tmp_path / "hf_home" / "hub" / "models--gpt2" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(snapshot)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "WANDB_MODE": "disabled",
    }
    for args in (["sample.py", "run=gpt2", "prompt=Hello", "max_new_tokens=3"],
                 ["heads.py", "run=gpt2", f"out={tmp_path / 'heads'}", "ablation.enabled=false"]):  # fmt: skip
        p = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, p.stderr
    assert (tmp_path / "heads" / "heads.html").is_file()
    # without out=, heads.py writes under runs/hf/<id>/, never into the cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    run = load_run("gpt2")
    assert run.run_dir == Path("runs") / "hf" / "gpt2" and run.ckpt_path == snapshot / "model.safetensors"
    assert run.meta["tokenizer"] == "gpt2" and run.step == 0


# ------------------------------------------------------------------------------------------ tokenizers
def test_gpt2_tokenizer_json_tokenizes_as_tiktoken_on_the_whole_corpus():
    from gptlab.data import get_tokenizer
    from gptlab.data.tokenizers import HFTokenizer

    with gzip.open(ROOT / "data" / "corpus" / "shakespeare.jsonl.gz", "rt") as f:
        text = "\n\n".join(json.loads(line)["text"] for line in f)
    ours, theirs = get_tokenizer("gpt2"), HFTokenizer(gpt2_tokenizer_json(), 50256)
    ids = ours.encode_ordinary(text + PROBE)
    assert theirs.encode(text + PROBE) == ids and theirs.decode(ids) == text + PROBE
    assert theirs.vocab_size == 50257 and theirs.encode("<|endoftext|>") == [50256]


def test_a_gpt2_directory_reads_with_the_projects_gpt2_tokenizer(tmp_path):
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=50257, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    )
    hf.save_pretrained(tmp_path / "bare")  # no tokenizer files: GPT-2's vocabulary size says GPT-2 BPE
    assert load_pretrained(str(tmp_path / "bare")).meta == {
        "tokenizer": "gpt2",
        "vocab_size": 50257,
        "eot_id": 50256,
    }
    (tmp_path / "bare" / "tokenizer.json").write_text(
        gpt2_tokenizer_json()
    )  # and with GPT-2's tokenizer.json
    assert tokenizer_meta_for(tmp_path / "bare", hf.config.to_dict(), "x")["tokenizer"] == "gpt2"


def test_a_llama_directory_keeps_its_own_tokenizer_offline(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<s>", "</s>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    hf = hf_model("llama-gqa", V=len(words))
    hf.save_pretrained(tmp_path / "llama")
    fast.save_pretrained(tmp_path / "llama")
    run = load_run(tmp_path / "llama")
    assert (
        run.meta["tokenizer"] == "hf"
        and run.meta["eot_id"] == 1
        and run.tokenizer.encode("the cat sat") == [2, 3, 4]
    )
    # the tokenizer lives in the meta: rebuilt with the directory gone, as a fine-tuned run's checkpoint does
    from gptlab.data import get_tokenizer

    (tmp_path / "llama" / "tokenizer.json").unlink()
    assert get_tokenizer(json.loads(json.dumps(run.meta))).decode([5, 7, 6]) == "on a mat"
    # a directory without any tokenizer, not GPT-2's vocabulary: one line saying what is supported
    hf.save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="no tokenizer files"):
        load_run(tmp_path / "bare")
