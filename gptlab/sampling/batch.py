"""Batched generation with end-of-text, its memory check, and the closing line (tokens/s, the KV cache held).

The KV-cache accounting is the model's (``GPT.cache_capacity`` / ``GPT.cache_positions``, next to the context
rule of model/generate.py); this module multiplies it out for a batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gptlab.errors import UserError

from .options import Options


@dataclass
class Generation:
    """The result of one batched generation."""

    tokens: list[list[int]]  # per sample: the generated ids, cut before the end-of-text token when stopped
    steps: int  # token columns the model produced (the batch ran this many decoding steps)
    seconds: float  # wall time of the generation, prefill included
    prompt_len: int  # prompt tokens (the same for every sample)

    @property
    def tokens_per_s(self) -> float:
        if self.steps == 0 or self.seconds <= 0:
            return 0.0
        return len(self.tokens) * self.steps / self.seconds


def generate(
    model,
    prompt_ids: list[int],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    compile: bool | str = False,
    eot_id: int | None = None,
    on_tokens=None,
) -> Generation:
    """Generate `num_samples` continuations of one prompt as one (num_samples, T) batch.

    Tokens come from `model.generate_iter`, one column per step. A sample that produces `eot_id` is done
    (the token is not kept); the loop ends when every sample is done or after `max_new_tokens` steps.
    `on_tokens(ids)` is called with each new token of sample 0 while it is not done (for streaming).
    `compile` runs the decode step compiled (model/generate.py, CompiledDecoder); its compile time counts.
    """
    device = next(model.parameters()).device
    idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)  # (B, T0)
    tokens: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
    steps = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        it = model.generate_iter(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            compile=compile,
        )
        for col in it:  # (B, 1)
            steps += 1
            for b, t in enumerate(col[:, 0].tolist()):
                if done[b]:
                    continue
                if eot_id is not None and t == eot_id:
                    done[b] = True
                    continue
                tokens[b].append(t)
                if b == 0 and on_tokens is not None:
                    on_tokens([t])
            if all(done):
                break
    return Generation(
        tokens=tokens, steps=steps, seconds=time.perf_counter() - t0, prompt_len=len(prompt_ids)
    )


def memory_needed(
    model, dtype: torch.dtype, prompt_len: int, max_new: int, batch: int, use_cache: bool
) -> int:
    """A lower bound of the bytes one generation needs: KV cache, token buffer, logits and prefill scores."""
    cfg = model.config
    item = torch.empty((), dtype=dtype).element_size()
    kv = model.kv_cache_bytes_per_token(dtype) * model.cache_capacity() * batch if use_cache else 0
    tokens = batch * (prompt_len + max_new) * 8
    logits = 3 * batch * cfg.vocab_size * 4  # logits, probabilities and the sampling work buffers, float32
    ctx = min(prompt_len, cfg.block_size)
    prefill = batch * ctx * (cfg.n_embd * 4 + cfg.n_head * ctx) * item  # activations and one layer's scores
    return kv + tokens + logits + prefill


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (CUDA: the driver's count; CPU: MemAvailable), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(model, dtype, device, opts: Options, prompt_len: int) -> None:
    """Refuse, in one line, a generation that cannot fit in the free memory of ``device``."""
    need = memory_needed(model, dtype, prompt_len, opts.max_new_tokens, opts.num_samples, opts.use_cache)
    free = free_memory(device)
    if free is not None and need > free:
        raise UserError(
            f"num_samples={opts.num_samples} x max_new_tokens={opts.max_new_tokens} needs at least "
            f"{human_bytes(need)} on {device}, but {human_bytes(free)} is free; lower num_samples or "
            "max_new_tokens"
        )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def summary_line(gen: Generation, model, dtype: torch.dtype, use_cache: bool, compiled: bool = False) -> str:
    """The closing line: tokens/s and the KV-cache size used (compiled: the compile time is in the time)."""
    b = len(gen.tokens)
    line = (
        f"{b} x {gen.steps} tokens in {gen.seconds:.2f} s: {gen.tokens_per_s:.1f} tokens/s"
        f" (prompt {gen.prompt_len} tokens)"
    )
    if not use_cache:
        return line + "; KV cache off (use_cache=false)"
    per_tok = model.kv_cache_bytes_per_token(dtype)
    pos = model.cache_positions(gen.prompt_len, gen.steps)
    total = per_tok * pos * b
    line += (
        f"; KV cache {human_bytes(total)} = {b} sample(s) x {pos} positions x {per_tok} B/token"
        f" ({str(dtype).removeprefix('torch.')})"
    )
    return line + ("; decode step compiled (compile time included)" if compiled else "")
