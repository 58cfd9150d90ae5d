"""GPT: a decoder-only transformer with switchable attention, positions, norms and MLPs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.errors import UserError

from . import generate as gen
from .blocks import Block
from .config import ATTN_IMPLS, GPTConfig
from .hooks import HookPoint
from .kv_cache import KVCache, StaticKVCache
from .norms import RMSNorm, make_norm
from .positions import build_position


def init_weights(model: nn.Module, cfg: GPTConfig) -> None:
    """The one init (GPT-2 style): every Linear / Embedding weight ~ N(0, 0.02), biases 0, norm weights 1.

    Residual projections (attention ``o_proj`` and the MLP's ``proj``, marked ``residual_proj``) use
    std 0.02 / sqrt(2 * n_layer), so the residual stream's variance does not grow with depth (Radford et al.
    2019); with ``zero_init_proj`` they start at zero instead, so every block starts as the identity and the
    model's output at init is the embedding path's (``lm_head(ln_f(embeddings))``; modded-nanogpt's choice).
    Position parameters (learned table, Shaw tables, T5 biases) ~ N(0, 0.02).
    """
    std = 0.02
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            residual = getattr(mod, "residual_proj", False)
            if residual and cfg.zero_init_proj:
                nn.init.zeros_(mod.weight)
            else:
                nn.init.normal_(
                    mod.weight, mean=0.0, std=std / math.sqrt(2 * cfg.n_layer) if residual else std
                )
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Embedding):
            nn.init.normal_(mod.weight, mean=0.0, std=std)
        elif isinstance(mod, nn.LayerNorm | RMSNorm):
            nn.init.ones_(mod.weight)
            bias = getattr(mod, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)
        elif isinstance(mod, nn.ParameterList):
            for p in mod:
                nn.init.normal_(p, mean=0.0, std=std)


class GPT(nn.Module):
    """Decoder-only transformer. Modules: tok_emb, pos, blocks[l].{ln_1, attn, ln_2, mlp}, ln_f, lm_head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise UserError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        config.validate()
        if config.vocab_size is None:
            raise UserError(
                "model.vocab_size is null (= the data's vocabulary): set it before building the GPT"
            )
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos = build_position(config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)])
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one (V, C) matrix for input and output

    # ---------------------------------------------------------------------------------------- forward
    def hidden_states(
        self,
        idx: Tensor,
        cache: KVCache | None = None,
        window: int | None = None,
        attn_impl: str | None = None,
    ) -> Tensor:
        """idx (B, T) -> final-norm hidden states (B, T, C). cache/window/attn_impl: see forward."""
        if idx.dim() != 2:
            raise UserError(f"idx must be a (B, T) tensor of token ids, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        q0 = cache.next_pos if cache is not None else 0
        if self.pos.max_len is not None and q0 + T > self.pos.max_len:
            raise UserError(
                f"sequence of {q0 + T} tokens is longer than block_size={self.pos.max_len}, which "
                f"position={self.config.position} cannot go beyond; crop the input or use a relative scheme "
                "(rope, alibi, t5, relative, none)"
            )
        if cache is not None:
            cache.begin(T)
        x = self.tok_emb(idx)  # (B, T, C)
        pe = self.pos.embed(torch.arange(q0, q0 + T, device=idx.device))  # (T, C) or None
        if pe is not None:
            x = x + pe.to(x.dtype)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, self.pos, q0, cache, window, attn_impl)
        if cache is not None:
            cache.end()
        return self.ln_f(x)  # (B, T, C)

    def decode_step(self, idx: Tensor, ring: StaticKVCache, window: int | None = None) -> Tensor:
        """Next-token logits (B, V) for one new token per sample, idx (B, 1), at the ring's position.

        Every shape is fixed and no number comes from the host, so ``torch.compile(model.decode_step,
        fullgraph=True)`` compiles it once and CUDA graphs can replay it (model/generate.py, compile=True).
        ``window`` as in forward; the ring has already been filled by a prefill (``StaticKVCache.load``).
        """
        x = self.tok_emb(idx)  # (B, 1, C)
        pe = self.pos.embed(ring.pos)  # (1, C) or None
        if pe is not None:
            x = x + pe.to(x.dtype)
        ring.begin()
        for block in self.blocks:
            x = block(x, self.pos, 0, ring, window)
        ring.end()
        return self.unembed(self.ln_f(x)[:, -1, :])  # (B, V)

    def unembed(self, h: Tensor) -> Tensor:
        """Final-norm hidden states (..., C) -> logits (..., V): ``lm_head``, then, with ``logit_softcap`` c,
        ``c * tanh(logits / c)`` computed in float32 (Gemma 2), so every logit lies in (-c, c).

        The one place logits are made: forward, decode_step and generation all call it."""
        logits = self.lm_head(h)
        c = self.config.logit_softcap
        if c is None:
            return logits
        return c * torch.tanh(logits.float() / c)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        window: int | None = None,
        attn_impl: str | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) long -> (logits (B, T, vocab), loss or None).

        targets (B, T) long gives the mean cross-entropy (entries -1 are ignored). Keyword-only extras:
        ``cache`` (a KVCache: idx continues the cached tokens), ``window`` (override the sliding window),
        ``attn_impl`` ('sdpa' | 'explicit', override the config for this call).
        """
        if attn_impl is not None and attn_impl not in ATTN_IMPLS:
            raise UserError(f"attn_impl={attn_impl!r} is not known; choose one of: {', '.join(ATTN_IMPLS)}")
        h = self.hidden_states(idx, cache=cache, window=window, attn_impl=attn_impl)
        logits = self.unembed(h)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    # ---------------------------------------------------------------------------------------- facts
    @property
    def max_seq_len(self) -> int | None:
        """block_size for schemes that cannot go past it ('learned'), else None (any length)."""
        return self.pos.max_len

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied matrix counted once).

        non_embedding=True leaves out the token embedding table (and with it the tied lm_head) and the learned
        position table: the "N" of scaling-law papers. An untied lm_head is counted.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            emb = getattr(self.pos, "emb", None)
            if isinstance(emb, nn.Embedding):
                n -= emb.weight.numel()
        return n

    def kv_cache_bytes_per_token(self, dtype: torch.dtype = torch.float32) -> int:
        """KV-cache memory per token: 2 (k and v) * n_layer * n_kv_head * head_dim * bytes per element."""
        cfg = self.config
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * itemsize

    def cache_capacity(self) -> int:
        """Most positions one sample's KV cache keeps while generating: block_size for absolute schemes (crop
        and re-fill), else the sliding window min(window or block_size, block_size) (model/generate.py)."""
        return gen.cache_capacity(self)

    def cache_positions(self, prompt_len: int, steps: int) -> int:
        """Positions one sample's KV cache holds at its largest in a generation of ``steps`` new tokens."""
        return gen.cache_positions(self, prompt_len, steps)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward) at context length seq_len, for MFU.

        6 * N_matmul + 12 * n_layer * n_head * head_dim * T_att (the PaLM appendix B / nanoGPT estimate), with
        N_matmul the weights of every Linear layer including lm_head (embedding lookups are not matmuls) and
        T_att = min(seq_len, window): the keys each query attends to (not halved for causality).
        """
        cfg = self.config
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        t_att = seq_len if cfg.window is None else min(seq_len, cfg.window)
        return int(6 * n_matmul + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * t_att)

    # ---------------------------------------------------------------------------------------- hooks
    def hook_points(self) -> dict[str, HookPoint]:
        """{name: HookPoint} for every hook point, names as in named_modules()."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def _check_hook_names(self, names) -> dict[str, HookPoint]:
        points = self.hook_points()
        for name in names:
            if name not in points:
                raise UserError(
                    f"unknown hook point {name!r}; valid names look like blocks.0.attn.hook_z "
                    f"(see docs/architecture.md; {len(points)} points in this model)"
                )
        return points

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, Callable]]) -> Iterator[None]:
        """Context manager that registers forward hooks on hook points and removes them on exit."""
        points = self._check_hook_names([name for name, _ in fwd_hooks])
        handles = [points[name].register_forward_hook(fn) for name, fn in fwd_hooks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _impl_for(names, attn_impl):
        if attn_impl is not None:
            return attn_impl
        return "explicit" if any(n.endswith("hook_pattern") for n in names) else None

    def run_with_cache(
        self, idx: Tensor, names: list[str] | None = None, attn_impl: str | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward and record activations: (logits (B, T, V), {name: detached tensor}).

        names=None records every hook point. hook_pattern only fires on the explicit path, so the call runs
        the explicit path when names is None or asks for a pattern (override with attn_impl).
        """
        names = list(self.hook_points()) if names is None else list(names)
        store: dict[str, Tensor] = {}

        def saver(name):
            def fn(module, inp, out):
                store[name] = out.detach()

            return fn

        with self.hooks([(n, saver(n)) for n in names]):
            logits, _ = self(idx, attn_impl=self._impl_for(names, attn_impl))
        return logits, store

    def run_with_hooks(
        self,
        idx: Tensor,
        fwd_hooks: list[tuple[str, Callable]],
        targets: Tensor | None = None,
        attn_impl=None,
    ) -> tuple[Tensor, Tensor | None]:
        """Forward with temporary hooks ``fn(module, input, output) -> output | None``; returns (logits, loss).

        Hooks on hook_pattern switch this call to the explicit path (override with attn_impl).
        """
        with self.hooks(fwd_hooks):
            return self(idx, targets, attn_impl=self._impl_for([n for n, _ in fwd_hooks], attn_impl))

    @torch.no_grad()
    def attention_patterns(self, idx: Tensor) -> Tensor:
        """Every layer's and head's attention weights (n_layer, B, n_head, T, T), through the explicit path."""
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(self.config.n_layer)]
        _, store = self.run_with_cache(idx, names, attn_impl="explicit")
        return torch.stack([store[n] for n in names])

    # ---------------------------------------------------------------------------------------- generation
    def generate_iter(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        compile: bool | str = False,
    ) -> Iterator[Tensor]:
        """Like generate, but yields each new token column (B, 1) as soon as it is sampled."""
        return gen.generate_iter(
            self, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator, compile
        )

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        compile: bool | str = False,
    ) -> Tensor:
        """Continue idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens). Call model.eval() first.

        temperature=0 is greedy; top_k / top_p filter before sampling (global torch RNG or ``generator``).
        use_cache=True keeps a KV cache (n_kv_head heads per layer) and gives exactly the tokens of
        use_cache=False. Past block_size: relative schemes (none, rope, alibi, relative, t5) attend to a sliding
        window of the last block_size tokens (rolling cache); absolute ones (learned, sinusoidal) crop to the
        last block_size // 2 tokens and re-fill. Details in model/generate.py and docs/model.md.
        compile=True (with the cache) runs every token after the prompt through a compiled fixed-shape step:
        CUDA graphs on a GPU (mode reduce-overhead), plain torch.compile elsewhere; or name a torch.compile mode.
        """
        cols = list(
            self.generate_iter(idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator, compile)
        )
        return torch.cat([idx, *cols], dim=1)
