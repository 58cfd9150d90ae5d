"""The exact Hugging Face twin of a GPT, in memory, and how closely another implementation must match ours.

    to_hf_model(model)      -> PreTrainedModel   GPT2LMHeadModel, LlamaForCausalLM or MistralForCausalLM
    probe_ids, logit_gap, check_gap              the probe both interop.hf (export) and interop.tl check with

Shared by ``interop.hf`` and ``interop.tl`` (each imports it; neither imports the other at module level).
"""

from __future__ import annotations

import torch

from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig

from .hf_config import FAMILIES, to_hf_config
from .hf_weights import to_hf

TOLERANCE = 1e-4  # exported logits must match ours within this, relative to the largest logit (fp32)


def quiet_transformers():
    """transformers, with its warnings and progress bars off (our tools print one line or nothing)."""
    try:
        import transformers
    except ImportError:
        raise UserError("Hugging Face interop needs the hf extra: pip install -e '.[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def to_hf_model(model: GPT, eot_id: int | None = None):
    """The Hugging Face model (GPT2LMHeadModel, LlamaForCausalLM or MistralForCausalLM) that computes ``model``
    exactly, in fp32 and eval mode; UserError naming the field when no class does."""
    transformers = quiet_transformers()
    cfg = model.config
    family, kwargs = to_hf_config(cfg, eot_id)
    config_cls, model_cls = (getattr(transformers, n) for n in (_CONFIG_CLASS[family], FAMILIES[family]))
    hf = model_cls(config_cls(**kwargs))
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    hf.load_state_dict(to_hf(family, cfg, state), strict=True)
    return hf.float().eval()


_CONFIG_CLASS = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "mistral": "MistralConfig"}


def probe_ids(cfg: GPTConfig, batch: int = 2, length: int = 32) -> torch.Tensor:
    """Random token ids (fixed seed) to compare two implementations on: (batch, min(length, block_size))."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.vocab_size, (batch, min(length, cfg.block_size)), generator=g)


def logit_gap(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| divided by max(1, max |ours|): the relative gap compared with TOLERANCE."""
    return float((ours - theirs).abs().max()) / max(1.0, float(ours.abs().max()))


def check_gap(gap: float, what: str) -> None:
    if gap > TOLERANCE:
        raise UserError(
            f"{what} differs from the gptlab model by {gap:.2e} (more than {TOLERANCE:g}); nothing was written. "
            "This is a gptlab bug: please report it with the run's config"
        )
