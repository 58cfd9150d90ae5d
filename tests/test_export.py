"""export.py: a trained run becomes a Hugging Face directory that transformers (and TransformerLens) read with
our logits; unmappable architectures, bad options and occupied folders are one line; nothing is pickled."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_entry_point
from hydra import compose, initialize_config_dir

from gptlab.errors import UserError
from gptlab.training.loop import train

transformers = pytest.importorskip("transformers")

from gptlab.open_run import load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.n_layer=2", "model.n_head=4", "model.n_kv_head=2", "model.n_embd=32", "model.block_size=32",
    "train.batch_size=4", "train.max_iters=4", "train.eval_interval=4", "train.eval_iters=1",
    "train.log_interval=2", "train.sample_tokens=0", "optim.warmup_iters=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two trained char runs: the default (tiny: RoPE, RMSNorm, SwiGLU, here GQA) and an ALiBi one."""
    root = tmp_path_factory.mktemp("export_runs")
    out = {}
    for name, extra in (("rope", []), ("alibi", ["model.position=alibi"])):
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=[*SMALL, f"data.out_dir={root / 'prepared'}", *extra])
        train(cfg, root / name)
        out[name] = root / name
    return out


def cli(*args, timeout=300, umask=None):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "export.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=None if umask is None else (lambda: os.umask(umask)))  # fmt: skip


@pytest.mark.slow
def test_export_writes_a_directory_transformers_reads_with_our_logits(runs, tmp_path):
    out = tmp_path / "hf"
    p = cli(f"run={runs['rope']}", f"out={out}", umask=0o022)
    assert p.returncode == 0, p.stderr
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in out.iterdir()}
    assert set(modes.values()) == {"0o644"}, (
        modes
    )  # as open() makes files under umask 022 (safetensors: 0600)
    assert "wrote MistralForCausalLM" in p.stdout and "with tokenizer files" in p.stdout
    assert "note:" not in p.stdout  # a bias-free RoPE model agrees past block_size too
    names = sorted(f.name for f in out.iterdir())
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(names)
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".pth")) for n in names)  # safetensors only: no pickle
    run = load_run(runs["rope"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "MistralForCausalLM" and hf.config.num_key_value_heads == 2
    assert hf.config.sliding_window == hf.config.max_position_embeddings == 32  # our sampler's window
    idx = torch.randint(0, run.model.config.vocab_size, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, run.model(idx)[0], rtol=1e-4, atol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "ROMEO:\nWhat, ho!"
    assert tok(text).input_ids == run.tokenizer.encode(text) and tok.decode(tok(text).input_ids) == text
    # the safetensors file holds plain tensors that safetensors reads without transformers
    from safetensors.torch import load_file

    assert torch.equal(
        load_file(out / "model.safetensors")["model.embed_tokens.weight"], run.model.tok_emb.weight
    )


@pytest.mark.slow
def test_export_for_transformer_lens_checks_logits_and_patterns(runs, tmp_path):
    pytest.importorskip("transformer_lens")
    p = cli(f"run={runs['rope']}", f"out={tmp_path / 'tl'}", "format=transformer_lens")
    assert p.returncode == 0, p.stderr
    assert "transformer_lens_patterns" in p.stdout and "TransformerBridge.boot_transformers" in p.stdout
    assert "fit_special_tokens(" in p.stdout  # a char run: TransformerLens needs it for string input
    # the printed line runs as printed
    load = next(line for line in p.stdout.splitlines() if line.startswith("load it: ")).removeprefix(
        "load it: "
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    q = subprocess.run(
        [sys.executable, "-c", load], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert q.returncode == 0, q.stderr[-2000:]


@pytest.mark.slow
def test_export_of_alibi_is_one_line_naming_the_field_and_the_nearest_choice(runs, tmp_path):
    p = cli(f"run={runs['alibi']}", f"out={tmp_path / 'x'}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "model.position=alibi" in lines[0] and "nearest mappable choice: position=rope" in lines[0]
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())  # nothing written, no leftovers


@pytest.mark.slow
def test_export_replaces_only_an_earlier_export_and_only_when_told(runs, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    for extra in ([], ["overwrite=true"]):  # a folder of the user's: never replaced, even with overwrite=true
        p = cli(f"run={runs['rope']}", f"out={out}", *extra)
        assert p.returncode == 2 and "not written by export.py" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert [f.name for f in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    exp = tmp_path / "exp"
    assert cli(f"run={runs['rope']}", f"out={exp}", "verify=false").returncode == 0
    assert (exp / ".gptlab-export").is_file()
    p = cli(f"run={runs['rope']}", f"out={exp}", "verify=false")
    assert p.returncode == 2 and "holds an earlier export; pass overwrite=true" in p.stderr
    (exp / "stale.txt").write_text("from the old export")
    p = cli(f"run={runs['rope']}", f"out={exp}", "overwrite=true", "verify=false")
    assert p.returncode == 0, p.stderr
    assert (
        (exp / "config.json").is_file()
        and (exp / ".gptlab-export").is_file()
        and not (exp / "stale.txt").exists()
    )
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "busy",
        "exp",
    ]  # the temporary and the old folder are gone


@pytest.mark.parametrize(
    "opts, msg",
    [
        (dict(run=None, out="x"), "pass run="),
        (dict(run="runs/x", out=None), "pass out="),
        (dict(run="runs/x", out="x", format="onnx"), "format='onnx' is not known"),
        (dict(run="runs/x", out="x", verify="maybe"), "verify must be true or false"),
    ],
)
def test_bad_options_are_one_line(opts, msg):
    from omegaconf import OmegaConf

    export = load_entry_point("export")

    cfg = OmegaConf.create(
        {"run": None, "out": None, "format": "hf", "verify": True, "overwrite": False, **opts}
    )
    with pytest.raises(UserError, match=msg) as e:
        export.export(cfg)
    assert "\n" not in str(e.value)


def test_an_unknown_option_is_one_line_before_hydra():
    p = cli("run=runs/x", "out=x", "nonsense=1", timeout=120)
    assert p.returncode == 2 and "unknown config key 'nonsense'" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_out_that_cannot_be_a_folder_is_one_line(runs, tmp_path, where):
    from omegaconf import OmegaConf

    export = load_entry_point("export")

    (tmp_path / "afile").write_text("a file")
    out = tmp_path / "afile" / "sub" if where == "under-a-file" else Path("/proc/gptlab-export-test")
    cfg = OmegaConf.create({"run": str(runs["rope"]), "out": str(out), "format": "hf", "verify": True, "overwrite": False})  # fmt: skip
    want = (
        f"{tmp_path / 'afile'} is a file, not a folder"
        if where == "under-a-file"
        else "no folder can be made in /proc"
    )
    with pytest.raises(UserError, match=f"cannot write out={out}: {want}") as e:
        export.export(cfg)
    assert "\n" not in str(e.value)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["afile"]


def test_a_full_disk_while_exporting_is_one_line_naming_the_folder(runs, tmp_path):
    """safetensors reports ENOSPC as its own SafetensorError; a 40 KB tmpfs (root only) takes config.json but
    not model.safetensors. Nothing is left behind."""
    from test_faults import small_tmpfs

    with small_tmpfs(tmp_path / "full", "40k") as full:
        p = cli(f"run={runs['rope']}", f"out={full / 'x'}")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert (
            lines[0]
            == f"error: no space left on the device (writing {full / 'x'}); free some space and run again"
        )
        assert list(full.iterdir()) == []


def test_ctrl_c_while_exporting_is_one_line_and_leaves_nothing(runs, tmp_path):
    """A real SIGINT, sent by the export to itself once its files are written (while it checks them)."""
    code = (
        "import os, runpy, signal, sys\n"
        "import gptlab.interop.hf\n"
        "gptlab.interop.hf.verify_hf_dir = lambda *a: os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.argv[0] = 'export.py'\n"
        "runpy.run_path('export.py', run_name='__main__')\n"
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", code, f"run={runs['rope']}", f"out={tmp_path / 'x'}"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == "interrupted; the export was not written (out= is as it was)"
    assert list(tmp_path.iterdir()) == []  # neither out nor the unfinished folder beside it
