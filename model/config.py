"""GPTConfig: every architectural switch of the model, validated at construction.

A config that cannot work raises :class:`gptlab.errors.UserError` with one line that says what to fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gptlab.errors import UserError

from .positions import SCHEMES

POSITIONS = tuple(SCHEMES)  # the position-scheme registry lives in positions.py
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_tanh", "swiglu", "relu2", "none")
ATTN_IMPLS = ("auto", "sdpa", "flex", "explicit")  # see model/attention.py


def swiglu_hidden(n_embd: int) -> int:
    """Default SwiGLU width: 8/3 * n_embd rounded up to a multiple of 16 (keeps params ~ a 4x GELU MLP)."""
    return int(math.ceil(8 * n_embd / 3 / 16) * 16)


@dataclass
class GPTConfig:
    """Hyper-parameters of :class:`model.GPT` (every field is a Hydra override ``model.<field>=...``)."""

    vocab_size: int | None = 65  # None: not known yet (train.py takes the data's before it builds the GPT)
    block_size: int = 256  # training context length; "learned" positions cannot go beyond it
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # None = n_head (MHA); 1 = MQA; a divisor of n_head = GQA
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear layers and LayerNorm
    position: str = "rope"  # one of POSITIONS
    rope_theta: float = 10000.0
    rel_clip: int = 16  # Shaw et al. "relative": distances beyond this share one embedding
    rel_values: bool = True  # Shaw et al. value term (forces the explicit math, see docs/model.md)
    t5_buckets: int = 32
    t5_max_distance: int = 128
    norm: str = "layernorm"  # one of NORMS
    norm_eps: float = 1e-5
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (over head_dim, before RoPE)
    mlp: str = "gelu"  # one of MLPS
    mlp_hidden: int | None = None  # None: 4*n_embd (gelu, gelu_tanh, relu2) or swiglu_hidden(n_embd) (swiglu)
    tie_embeddings: bool = True
    logit_softcap: float | None = None  # logits = c * tanh(logits / c); None = off
    zero_init_proj: bool = False  # init: attention o_proj and MLP proj weights zero
    window: int | None = None  # sliding-window (local) causal attention: each query sees `window` keys
    attn_impl: str = "auto"  # one of ATTN_IMPLS; auto = flex on CUDA for biases/windows, else sdpa

    def __post_init__(self):
        self.validate()

    # ----------------------------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """The number of key/value heads actually used."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        """Width of the MLP's hidden layer (0 for mlp='none')."""
        if self.mlp == "none":
            return 0
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return swiglu_hidden(self.n_embd) if self.mlp == "swiglu" else 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Build from a (checkpoint or Hydra) dict; unknown keys raise a UserError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(
                f"unknown model config field(s) {unknown}; valid fields: {', '.join(sorted(names))}"
            )
        return cls(**dict(d))

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise UserError (one line) for any combination that cannot work."""

        def choice(field, value, choices):
            if value not in choices:
                raise UserError(f"model.{field}={value!r} is not known; choose one of: {', '.join(choices)}")

        choice("position", self.position, POSITIONS)
        choice("norm", self.norm, NORMS)
        choice("mlp", self.mlp, MLPS)
        choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            if v is None and name == "vocab_size":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"model.{name} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise UserError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; "
                "pick n_embd as a multiple of n_head"
            )
        kv = self.n_kv_head
        if kv is not None and (not isinstance(kv, int) or kv < 1 or self.n_head % kv):
            raise UserError(
                f"model.n_kv_head={kv!r} must divide model.n_head={self.n_head} "
                "(n_head for MHA, 1 for MQA, a divisor for GQA, or null)"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise UserError(
                f"position=rope needs an even head size, but n_embd/n_head = {self.head_dim}; "
                "change n_embd or n_head"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.attn_impl == "flex" and self.dropout > 0:
            raise UserError(
                f"model.attn_impl=flex has no dropout on the attention weights, but model.dropout={self.dropout}; "
                "set model.dropout=0, or use attn_impl=auto (sdpa while dropout is on)"
            )
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise UserError(f"model.window={self.window!r} must be a positive integer or null (no window)")
        if self.mlp_hidden is not None and (not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 1):
            raise UserError(f"model.mlp_hidden={self.mlp_hidden!r} must be a positive integer or null")
        if self.rope_theta <= 0:
            raise UserError(f"model.rope_theta={self.rope_theta} must be positive")
        if not isinstance(self.rel_clip, int) or self.rel_clip < 1:
            raise UserError(f"model.rel_clip={self.rel_clip!r} must be a positive integer")
        if not isinstance(self.t5_buckets, int) or self.t5_buckets < 2:
            raise UserError(f"model.t5_buckets={self.t5_buckets!r} must be an integer >= 2")
        if self.t5_max_distance <= self.t5_buckets // 2:
            raise UserError(
                f"model.t5_max_distance={self.t5_max_distance} must exceed t5_buckets/2={self.t5_buckets // 2}"
            )
        if self.norm_eps <= 0:
            raise UserError(f"model.norm_eps={self.norm_eps} must be positive")
        for name in ("qk_norm", "tie_embeddings", "zero_init_proj"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"model.{name}={getattr(self, name)!r} must be true or false")
        cap = self.logit_softcap
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap < math.inf
        ):
            raise UserError(
                f"model.logit_softcap={cap!r} must be a positive number (e.g. 30) or null (no cap)"
            )
