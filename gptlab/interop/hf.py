"""Hugging Face models as gptlab runs, and gptlab runs as Hugging Face models.

    load_pretrained(source) -> Pretrained   an HF directory or hub id: our config, state dict and tokenizer meta
    load_hf_run(source)     -> Run          a rundir.load.Run, as open_run.load_run returns (what sample.py and heads.py read)
    to_hf_model(model)      -> PreTrainedModel   the exact HF twin of a GPT, in memory (interop.hf_model)
    export_hf(run, out)                     write it as an HF directory (config.json, model.safetensors,
                                            generation_config.json, tokenizer files) and check it

A hub id is fetched only here, only when a user names one, and only the files a model needs (config, the
safetensors weights, tokenizer files). Weights are read from safetensors (or a pytorch_model.bin with
``weights_only=True``) and written as safetensors: nothing is unpickled, nothing is pickled.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.data import get_tokenizer
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import first_line
from gptlab.rundir.files import disk_full_error, plain_file_mode, read_json
from gptlab.rundir.load import Run, build_model, check_weights

from .hf_config import from_hf_config, past_block_size
from .hf_model import check_gap, logit_gap, probe_ids, quiet_transformers, to_hf_model
from .hf_tokenizer import TOKENIZER_FILES, save_tokenizer, tokenizer_meta_for
from .hf_weights import State, drop_empty_mlps, from_hf

HUB_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    *TOKENIZER_FILES,
]
# where tools put what they write about a hub model (heads.py: runs/hf/<id>/heads)
HF_RUNS = Path("runs") / "hf"


# ---------------------------------------------------------------------------------------------- sources
def local_copy(source: str) -> Path:
    """The local directory of an HF source: the directory itself, or the hub snapshot (downloaded once)."""
    p = Path(source).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(
                f"{p} has no config.json; pass a directory written by save_pretrained, or a hub id"
            )
        return p
    return _download(source)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise UserError("loading a Hugging Face hub id needs the hf extra: pip install -e '.[hf]'") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # huggingface_hub raises many types (HTTP, offline, validation, auth)
        kind = type(e).__name__
        if constants.HF_HUB_OFFLINE or kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
            raise UserError(
                f"{repo_id!r} is not a local directory and not in the Hugging Face cache, and the hub is offline "
                "(HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE and connect to download it once, or pass a local "
                "directory written by save_pretrained"
            ) from None
        if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "HFValidationError"):
            raise UserError(
                f"no local directory and no Hugging Face model named {repo_id!r}; check the path or the id "
                "(e.g. gpt2, HuggingFaceTB/SmolLM-135M)"
            ) from None
        if kind == "GatedRepoError":
            raise UserError(
                f"{repo_id} is gated: accept its terms on huggingface.co and log in (hf auth login)"
            ) from None
        raise UserError(
            f"could not download {repo_id!r} from the Hugging Face hub ({kind}: {first_line(e, 120)})"
        ) from None


SIZES = (  # config.json fields that count something: a positive integer where they are set
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
    "sliding_window",
)  # fmt: skip


def read_hf_config(local: Path) -> dict:
    """config.json as transformers reads it (its defaults filled in, old field names converted)."""
    transformers = quiet_transformers()
    f = local / "config.json"
    raw = read_json(f, {})
    for key in SIZES:  # before transformers divides by them
        value = raw.get(key) if isinstance(raw, dict) else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{f} has {key}={value!r}; it must be a positive integer")
    try:
        return transformers.AutoConfig.from_pretrained(str(local)).to_dict()
    except Exception as e:  # transformers validates configs with many error types (ValueError, its own)
        raise UserError(f"{f} cannot be read by transformers ({first_line(e.__cause__ or e, 160)})") from None


def read_weights(local: Path) -> tuple[State, Path]:
    """The HF state dict of a directory (model.safetensors, sharded safetensors, or pytorch_model.bin)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = read_json(local / "model.safetensors.index.json", {})
    files = sorted(set(index.get("weight_map", {}).values())) if index else []
    if not files and (local / "model.safetensors").is_file():
        files = ["model.safetensors"]
    if not files:
        bin_file = local / "pytorch_model.bin"
        if not bin_file.is_file():
            raise UserError(f"{local} has no model.safetensors (nor pytorch_model.bin); it holds no weights")
        try:  # tensors only: weights_only refuses any pickled code
            return torch.load(bin_file, map_location="cpu", weights_only=True), bin_file
        except Exception as e:
            raise UserError(f"{bin_file} is not a readable weights file ({first_line(e, 120)})") from None
    state: State = {}
    for name in files:
        f = local / name
        if Path(name).name != name or not f.is_file():  # an index names plain files beside it, nothing else
            raise UserError(
                f"{local}: model.safetensors.index.json names {name!r}, which is not a file there"
            )
        try:
            state.update(load_file(str(f), device="cpu"))
        except (SafetensorError, OSError) as e:
            raise UserError(f"{f} is not a readable safetensors file ({first_line(e, 120)})") from None
    return state, local / files[0]


# ---------------------------------------------------------------------------------------------- import
@dataclass
class Pretrained:
    """A Hugging Face model read for gptlab: what train.py init_from= and load_hf_run build on."""

    source: str  # what the user named (a directory or a hub id)
    local: Path  # the directory the files were read from
    family: str  # gpt2 | llama | mistral
    config: dict  # GPTConfig fields
    meta: dict  # tokenizer meta (get_tokenizer rebuilds it offline)
    max_block_size: int | None  # the longest block_size the weights allow (learned positions), else None
    state: State | None = None  # our state dict (for GPT(GPTConfig(**config))), once read
    weights_file: Path | None = None


def open_pretrained(source: str, changes: dict | None = None, expect: dict | None = None) -> Pretrained:
    """An HF directory or hub id's config and tokenizer, its weights not yet read.

    ``changes`` replaces config fields that leave the weights as they are (dropout, attn_impl, a shorter
    block_size for learned positions); ``expect`` holds fields a user set that must equal the pretrained ones.
    """
    local = local_copy(str(source))
    hf_cfg = read_hf_config(local)
    try:
        family, values = from_hf_config(hf_cfg)
        for field, value in (expect or {}).items():
            if values.get(field) != value:
                raise UserError(
                    f"model.{field}={value!r} conflicts with the pretrained model's {field}={values.get(field)!r}; "
                    "drop it (only model.dropout, model.attn_impl and model.block_size may change)"
                )
        limit = values["block_size"] if values["position"] == "learned" else None
        values = {**values, **(changes or {})}
        if limit is not None and values["block_size"] > limit:
            raise UserError(
                f"model.block_size={values['block_size']} is longer than its learned position table "
                f"({limit} positions); use model.block_size <= {limit}"
            )
        GPTConfig(**values)  # validates
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    meta = tokenizer_meta_for(local, hf_cfg, str(source))
    return Pretrained(str(source), local, family, values, meta, limit)


def read_pretrained_weights(pre: Pretrained) -> Pretrained:
    """Fill in ``pre.state`` (our names and layout) from the directory's weights."""
    hf_state, pre.weights_file = read_weights(pre.local)
    state = from_hf(pre.family, GPTConfig(**pre.config), hf_state, source=str(pre.weights_file))
    pre.config, pre.state = drop_empty_mlps(pre.config, state)
    # what every tool and train.py init_from= build on: one line here, never a load_state_dict traceback
    check_weights(
        pre.config, pre.state, pre.weights_file, why=f"{pre.local / 'config.json'} describes another model"
    )
    return pre


def load_pretrained(source: str, changes: dict | None = None, expect: dict | None = None) -> Pretrained:
    """:func:`open_pretrained` and :func:`read_pretrained_weights` in one call."""
    return read_pretrained_weights(open_pretrained(source, changes, expect))


def load_hf_run(source: str, device: str | torch.device = "cpu") -> Run:
    """An HF directory or hub id as a run: model (eval mode, fp32) on ``device``, tokenizer, meta, config."""
    pre = load_pretrained(source)
    model = build_model(pre.config, pre.state, pre.weights_file).to(device).eval()
    local_dir = Path(source).expanduser().is_dir()
    return Run(
        model=model,
        tokenizer=get_tokenizer(pre.meta),
        meta=pre.meta,
        config={
            "init_from": pre.source,
            "model": pre.config,
            "hf": {"family": pre.family, "dir": str(pre.local)},
        },
        ckpt={},
        ckpt_path=pre.weights_file,
        run_dir=pre.local if local_dir else HF_RUNS / pre.source.replace("/", "--"),
        step=0,
    )


# ---------------------------------------------------------------------------------------------- export
def verify_hf_dir(path: Path, model: GPT) -> float:
    """Load ``path`` with AutoModelForCausalLM and return its logit gap to ``model`` on probe ids."""
    transformers = quiet_transformers()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    idx = probe_ids(model.config)
    dev = next(model.parameters()).device
    with torch.no_grad():
        ours = model(idx.to(dev))[0].float().cpu()
        theirs = hf(idx).logits
    return logit_gap(ours, theirs)


def export_hf(
    run: Run, out: str | Path, fmt: str = "hf", verify: bool = True, overwrite: bool = False
) -> dict:
    """Write ``run`` as a Hugging Face model directory ``out`` (see docs/interop.md); returns what was done.

    Written into a fresh folder beside ``out`` and renamed into place once complete and checked, so ``out``
    is either the old export or the new one. ``fmt="transformer_lens"`` also checks that TransformerLens
    loads it with our logits and attention patterns.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; pass a directory for the Hugging Face model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"out={out} is not empty; pass overwrite=true to replace it, or another out=")
    model = run.model.float().eval()
    eot = run.meta.get("eot_id")
    hf = to_hf_model(model, eot)  # refuses an architecture no class computes, before anything is written
    tmp = out.parent / f".{out.name}.export-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise disk_full_error(e, out) or UserError(f"cannot write out={out}: {_why_not(out, e)}") from None
    report = {"out": out, "class": type(hf).__name__, "tokenizer": False, "gaps": {}}
    report["note"] = past_block_size(model.config)  # where it stops agreeing with our sampler, if silently
    # no end-of-text token: TransformerLens needs interop.tl.fit_special_tokens for string input
    report["no_bos"] = eot is None or not 0 <= int(eot) < model.config.vocab_size
    try:
        try:
            hf.save_pretrained(str(tmp))
            report["tokenizer"] = save_tokenizer(run.meta, tmp, model.config.block_size)
        except Exception as e:  # safetensors reports a full disk as its own SafetensorError
            full = disk_full_error(e, out)
            if full is None:
                raise
            raise full from e
        # safetensors writes model.safetensors 0600: the umask's mode, as the other files have
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, plain_file_mode())
        if verify:
            report["gaps"]["transformers"] = gap = verify_hf_dir(tmp, model)
            check_gap(gap, f"{report['class']}.from_pretrained({out})")
        if fmt == "transformer_lens":
            from .tl import bridge_from_dir, check_bridge

            report["gaps"].update(check_bridge(bridge_from_dir(tmp, run.meta, model.config), model))
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _why_not(out: Path, e: OSError) -> str:
    """Why the folder ``out`` (or the temporary one beside it) cannot be made, in words, and what to do."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder; pass out= a path under a folder"
            return f"no folder can be made in {parent} ({e.strerror}); pass out= a folder you can write"
    return f"{e.strerror}; pass out= a folder you can write"


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``, replacing an old ``out`` only once ``new`` is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
