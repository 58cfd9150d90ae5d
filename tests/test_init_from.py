"""train.py init_from=<HF directory>: a tiny random GPT-2 (and Llama) saved with save_pretrained, fine-tuned a few
steps on data tokenized with its tokenizer; sample.py and heads.py then read the run; resume reads its own
checkpoint; mismatched data, conflicting overrides and bad block sizes are one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gptlab.errors import UserError
from gptlab.training.loop import train
from gptlab.training.pretrained import start_from_pretrained
from gptlab.training.resume import Plan

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [
    "train.batch_size=2", "train.max_iters=4", "train.eval_interval=2", "train.eval_iters=1",
    "train.log_interval=1", "train.sample_tokens=0", "optim.warmup_iters=0", "optim.lr=1e-3",
    "optim.min_lr=1e-4",
]  # fmt: skip


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A random GPT-2 of GPT-2's vocabulary, saved as transformers saves models (no tokenizer files)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64
    )
    d = tmp_path_factory.mktemp("pretrained") / "tiny-gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return tmp_path_factory.mktemp("prepared")


def overrides(source, prepared, *extra, data="shakespeare_gpt2"):
    return [f"init_from={source}", f"data={data}", f"data.out_dir={prepared / data}", *TRAIN, *extra]


def compose_cfg(ov):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=ov)


def rows(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def cli(script, *args):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_init_from_a_gpt2_directory_fine_tunes_and_the_tools_read_the_run(gpt2_dir, prepared, tmp_path):
    ov = overrides(gpt2_dir, prepared, "model.block_size=32", "model.dropout=0.0")
    run_dir = tmp_path / "run"
    summary = train(compose_cfg(ov), run_dir, overrides=ov)
    assert summary["status"] == "finished" and summary["init_from"] == str(gpt2_dir)
    saved = (run_dir / "config.yaml").read_text()
    assert f"init_from: {gpt2_dir}" in saved
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    mc = ckpt["model_config"]
    assert (mc["position"], mc["norm"], mc["mlp"], mc["bias"], mc["tie_embeddings"]) == (
        "learned",
        "layernorm",
        "gelu_tanh",
        True,
        True,
    )
    assert (
        mc["n_layer"],
        mc["n_embd"],
        mc["mlp_hidden"],
        mc["vocab_size"],
        mc["block_size"],
        mc["dropout"],
    ) == (2, 32, 64, 50257, 32, 0.0)
    assert ckpt["tokenizer"]["tokenizer"] == "gpt2"
    # step 1's loss is the pretrained model's own loss on the first batch: training started from its weights
    from gptlab.data import BatchLoader

    x, y = BatchLoader(
        prepared / "shakespeare_gpt2" / "train.bin", block_size=32, batch_size=2, seed=1337
    ).next()
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        want = F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten()).item()
    assert rows(run_dir, "train")[0]["train_loss"] == pytest.approx(want, abs=1e-4)
    # ... and fine-tuning moved them
    assert not torch.equal(ckpt["model"]["tok_emb.weight"], hf.transformer.wte.weight)
    p = cli("sample.py", f"run={run_dir}", "prompt=ROMEO:", "max_new_tokens=5")
    assert p.returncode == 0 and p.stdout.startswith("ROMEO:"), p.stderr
    p = cli("heads.py", f"run={run_dir}", f"out={tmp_path / 'heads'}", "ablation.enabled=false")
    assert p.returncode == 0 and (tmp_path / "heads" / "heads.html").is_file(), p.stderr


def test_a_resumed_init_from_run_reads_its_own_checkpoint(gpt2_dir, prepared, tmp_path):
    moved = tmp_path / "source"
    shutil.copytree(gpt2_dir, moved)
    ov = overrides(moved, prepared, "model.block_size=16", "optim=finetune")
    first = train(
        compose_cfg([*ov, "train.stop_after_iters=2"]),
        tmp_path / "run",
        overrides=[*ov, "train.stop_after_iters=2"],
    )
    assert first["status"] == "interrupted" and first["step"] == 2
    shutil.rmtree(moved)  # the pretrained model is gone: a resume must not need it
    again = [*ov, "train.resume=true"]
    done = train(compose_cfg(again), tmp_path / "run", overrides=again)
    assert done["status"] == "finished" and done["step"] == 4 and done["init_from"] == str(moved)


@pytest.mark.slow
def test_init_from_with_char_data_is_one_line(gpt2_dir, tmp_path):
    p = cli("train.py", f"init_from={gpt2_dir}", "data=shakespeare_char", f"hydra.run.dir={tmp_path / 'r'}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert (
        "reads GPT-2 BPE tokens" in lines[0]
        and "data=shakespeare_char" in lines[0]
        and "data=shakespeare_gpt2" in lines[0]
    )
    assert not (tmp_path / "r" / "config.yaml").exists()


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["model=small"], "drop model="),
        (["model.n_layer=4"], "model.n_layer=4 conflicts with the pretrained model's n_layer=2"),
        (["model.position=rope"], "model.position='rope' conflicts"),
        (["model.block_size=128"], "longer than its learned position table (64 positions)"),
    ],
)
def test_overrides_that_change_the_pretrained_shape_are_one_line(gpt2_dir, prepared, extra, msg):
    ov = overrides(gpt2_dir, prepared, *extra)
    plan = Plan("start", dict(_container(compose_cfg(ov))))
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        start_from_pretrained(plan, ov)
    assert "\n" not in str(e.value)


def test_overrides_that_keep_the_weights_are_applied(gpt2_dir, prepared):
    ov = overrides(
        gpt2_dir,
        prepared,
        "model.n_layer=2",
        "model.dropout=0.2",
        "model.attn_impl=explicit",
        "model.block_size=8",
    )
    plan = Plan("start", dict(_container(compose_cfg(ov))))
    pre = start_from_pretrained(plan, ov)
    m = plan.config["model"]
    assert (m["n_layer"], m["dropout"], m["attn_impl"], m["block_size"]) == (2, 0.2, "explicit", 8)
    assert pre.state["pos.emb.weight"].shape == (8, 32)  # the learned table cut to the block size


def _container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
def test_init_from_a_llama_directory_uses_its_tokenizer_json(tmp_path):
    """Llama family: the data is prepared with the model's tokenizer.json; the run samples with it offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = (ROOT / "tests").joinpath("test_init_from.py").read_text() * 3  # any few KB of text
    (tmp_path / "corpus.txt").write_text(text)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"]))
    llama = tmp_path / "tiny-llama"
    hf_cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    transformers.LlamaForCausalLM(hf_cfg).save_pretrained(llama)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(llama)
    data = ["data=text_files", f"data.path={tmp_path / 'corpus.txt'}", f"data.out_dir={tmp_path / 'prep'}"]
    with pytest.raises(UserError, match=r"has its own tokenizer.*data.tokenizer=.*tokenizer.json"):
        start_from_pretrained(Plan("start", _container(compose_cfg([f"init_from={llama}", *data]))), [])
    ov = [f"init_from={llama}", *data, f"data.tokenizer={llama}", "model.block_size=32", *TRAIN]
    summary = train(compose_cfg(ov), tmp_path / "run", overrides=ov)
    assert summary["status"] == "finished"
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["model_config"]["n_kv_head"] == 2 and ckpt["model_config"]["norm"] == "rmsnorm"
    assert ckpt["tokenizer"]["tokenizer"] == "hf" and ckpt["tokenizer"]["eot_id"] == tok.token_to_id("</s>")
    shutil.rmtree(llama)  # the run carries its tokenizer
    p = cli("sample.py", f"run={tmp_path / 'run'}", "prompt=def test", "max_new_tokens=5")
    assert p.returncode == 0 and p.stdout.startswith("def test"), p.stderr


@pytest.mark.slow
def test_plain_training_never_imports_transformers(tmp_path):
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from gptlab.training.loop import train\n"
        f"with initialize_config_dir({str(ROOT / 'configs')!r}, version_base='1.3'):\n"
        f"    cfg = compose('config', overrides=['data.out_dir={tmp_path / 'p'}', 'train.max_iters=1', 'train.eval_iters=1',"
        " 'train.sample_tokens=0', 'model.n_layer=1', 'model.block_size=16', 'train.batch_size=2'])\n"
        f"train(cfg, {str(tmp_path / 'run')!r})\n"
        "heavy = [m for m in ('transformers', 'transformer_lens', 'safetensors', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "WANDB_MODE": "disabled"}
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-2000:]


def _own_tokenizer(text: str):
    """A small byte-level BPE trained on ``text`` (not GPT-2's), with an end-of-text token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"]))
    return tok


@pytest.mark.parametrize("prepared_too", [False, True])
def test_a_resume_needs_neither_the_source_nor_its_tokenizer(tmp_path, capsys, prepared_too):
    """data.tokenizer=<the init_from directory>, as docs/interop.md says; then the directory is deleted (and the
    prepared data too): the resume runs on the tokenizer its checkpoint carries, with the same tokens."""
    text = (ROOT / "tests" / "test_init_from.py").read_text() * 3
    (tmp_path / "corpus.txt").write_text(text)
    tok = _own_tokenizer(text)
    src = tmp_path / "tiny-gpt2-own-tokenizer"
    hf_cfg = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16, n_layer=1, n_head=2
    )
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(src)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(src)
    prep = tmp_path / "prep"
    ov = [f"init_from={src}", "data=text_files", f"data.path={tmp_path / 'corpus.txt'}", f"data.out_dir={prep}",
          f"data.tokenizer={src}", "model.block_size=16", *TRAIN]  # fmt: skip
    first = train(
        compose_cfg([*ov, "train.stop_after_iters=2"]),
        tmp_path / "run",
        overrides=[*ov, "train.stop_after_iters=2"],
    )
    assert first["status"] == "interrupted" and first["step"] == 2
    tokens = (prep / "train.bin").read_bytes()
    shutil.rmtree(src)
    if prepared_too:
        shutil.rmtree(prep)
    capsys.readouterr()
    again = [*ov, "train.resume=true"]  # the same command line, as a resume is typed
    done = train(compose_cfg(again), tmp_path / "run", overrides=again)
    assert done["status"] == "finished" and done["step"] == 4
    err = capsys.readouterr().err
    assert f"data.tokenizer={src} is gone; using the run's copy" in err
    assert ("preparing data" in err) == prepared_too  # the same content: prepared data is reused as it is
    assert (prep / "train.bin").read_bytes() == tokens
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["data"]["tokenizer"] == str(src)  # the run still says where it started from
    assert ckpt["tokenizer"]["eot_id"] == tok.token_to_id("</s>")


def test_init_from_weights_of_other_shapes_is_one_line_before_anything_is_written(gpt2_dir, tmp_path):
    """A 32-wide model's weights under a config edited to say 48: the shared loader's one line, not
    load_state_dict's traceback."""
    edited = tmp_path / "edited"
    shutil.copytree(gpt2_dir, edited)
    cfg = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**cfg, "n_embd": 48}))
    p = cli("train.py", f"init_from={edited}", "data=shakespeare_gpt2", f"hydra.run.dir={tmp_path / 'r'}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "the weights do not match the model its config describes" in lines[0]
    assert "(50257, 32) in the file, (50257, 48) in the model" in lines[0]
    assert not (tmp_path / "r" / "config.yaml").exists()
