"""Generate text from a trained run.

    python sample.py run=runs/my_run prompt="ROMEO:" num_samples=3 temperature=0.8

The run directory (or a checkpoint file) carries the model and its tokenizer metadata, so a char model and
a gpt2 model both just work. One sample streams to stdout token by token; several samples are generated
together as one batch and printed one after another with a separator. Generated text goes to stdout, the
closing line with tokens/s and the KV-cache size goes to stderr, so `python sample.py ... > out.txt` keeps
only the text. Options are in configs/sample.yaml; docs/sampling.md has the details.
"""

from __future__ import annotations

import signal
import sys

from gptlab_errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from cli import exit_after_help

    exit_after_help("sample", sys.argv[1:], __doc__)  # --help at once, before the slow imports

import codecs
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from cli import prepare_argv, read_text_file
from gptlab_errors import UserError, exit_on_user_error
from model.generate import COMPILE_MODES
from runtime.device import DTYPES, pick_device, pick_dtype, set_threads

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # absolute: works from any cwd or importer


# ----------------------------------------------------------------------------------------------------------
# options


@dataclass
class Options:
    """The validated settings of one sampling call (configs/sample.yaml documents each)."""

    run: str
    step: Any = None  # a step number, best or last (rundir.load resolves it)
    prompt: str | None = None  # None: default_prompt(run)
    prompt_file: str | None = None
    num_samples: int = 1
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337
    use_cache: bool = True
    compile: bool | str = False
    device: str = "auto"
    dtype: str = "auto"
    stop_at_eot: bool = True
    stream: bool | str = "auto"
    echo_prompt: bool = True
    separator: str = "---------------"
    threads: int | None = None


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    return float(value)


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


def parse_options(cfg: DictConfig | dict) -> Options:
    """Check every option and return them typed; anything wrong raises a one-line UserError."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c.pop("hydra", None)
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(c) - known)
    if unknown:
        raise UserError(f"unknown sample option(s) {unknown}; see configs/sample.yaml")
    if c.get("run") in (None, ""):
        raise UserError("no run given; pass run=<run directory or checkpoint .pt file>")
    o = Options(**c)
    o.run = str(o.run)
    if isinstance(o.prompt, (list, dict)):
        raise UserError("prompt must be one string; quote it for Hydra: 'prompt=\"Hello, world\"'")
    o.prompt = None if o.prompt is None else str(o.prompt)
    o.prompt_file = None if o.prompt_file in (None, "") else str(o.prompt_file)
    o.num_samples = _as_int("num_samples", o.num_samples, 1)
    o.max_new_tokens = _as_int("max_new_tokens", o.max_new_tokens, 0)
    o.seed = _as_int("seed", o.seed, 0)
    o.temperature = _as_float("temperature", o.temperature)
    if not o.temperature >= 0 or o.temperature == float("inf"):
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {o.temperature}")
    if o.top_k in (None, 0):
        o.top_k = None
    else:
        o.top_k = _as_int("top_k", o.top_k, 0)
    if o.top_p is not None:
        o.top_p = _as_float("top_p", o.top_p)
        if not 0.0 < o.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (1 = off), got {o.top_p}")
    for name in ("use_cache", "stop_at_eot", "echo_prompt"):
        setattr(o, name, _as_bool(name, getattr(o, name)))
    if not isinstance(o.compile, bool) and o.compile not in COMPILE_MODES:
        raise UserError(
            f"compile must be true, false or one of {', '.join(COMPILE_MODES)}, got {o.compile!r}"
        )
    if o.compile and not o.use_cache:
        raise UserError("compile=true compiles the KV-cached decode step; it needs use_cache=true")
    if o.stream != "auto":
        o.stream = _as_bool("stream", o.stream)
    if o.stream is True and o.num_samples > 1:
        raise UserError("stream=true needs num_samples=1; several samples are printed when the batch ends")
    o.stream = o.num_samples == 1 if o.stream == "auto" else o.stream
    if o.dtype not in ("auto", *DTYPES):
        raise UserError(f"unknown dtype {o.dtype!r}; choose auto, {', '.join(DTYPES)}")
    o.separator = str(o.separator)
    if o.threads is not None:
        o.threads = _as_int("threads", o.threads, 1)
    return o


# ----------------------------------------------------------------------------------------------------------
# prompt


def read_prompt(prompt: str | None, prompt_file: str | None, stdin=None) -> str | None:
    """The prompt text: from `prompt_file` when set, else `prompt`; "-" for either reads stdin; None for the
    run's default prompt (`default_prompt`)."""
    stdin = sys.stdin if stdin is None else stdin
    if prompt_file is not None:
        return stdin.read() if prompt_file == "-" else read_text_file(prompt_file, "prompt_file")
    if prompt == "-":
        return stdin.read()
    return prompt


def default_prompt(run, max_tokens: int = 32) -> str:
    """The prompt of ``prompt=null``: the first line of the run's training text (at most ``max_tokens`` tokens, not
    its newline) when its prepared data is here; else the start of a document: the end-of-text token ("") where
    the tokenizer has one, "\\n" where it has none (a char model). Greedy decoding of a small char model from
    "\\n" can print newlines forever (a newline is the likeliest character after a newline in Shakespeare); from
    the middle of a line it prints text."""
    import numpy as np

    from data import find_prepared, load_meta

    data_cfg = (run.config or {}).get("data")
    found = find_prepared(data_cfg, run.meta) if isinstance(data_cfg, dict) else None
    if found is not None:
        n = max(1, min(max_tokens, run.model.config.block_size // 2))
        ids = np.memmap(found / "train.bin", dtype=np.dtype(load_meta(found)["dtype"]), mode="r")[:n]
        text = run.tokenizer.decode([int(t) for t in ids])
        line = text.split("\n", 1)[0]
        if line.strip():
            return line
    return "" if getattr(run.tokenizer, "eot_id", None) is not None else "\n"


def encode_prompt(tokenizer, meta: dict, text: str, max_seq_len: int | None) -> list[int]:
    """Prompt text -> token ids, checked against the vocabulary and the model's length limit."""
    chars = meta.get("chars")
    if chars is not None:  # char tokenizer: name what the vocabulary lacks, in order of appearance
        vocab = set(chars)
        missing = list(dict.fromkeys(ch for ch in text if ch not in vocab))
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise UserError(
                f"the prompt has {len(missing)} character(s) this char model's vocabulary lacks: {shown}; "
                "remove or replace them"
            )
    if text == "":
        eot = getattr(tokenizer, "eot_id", None)
        if eot is None:
            raise UserError(
                "empty prompt and this tokenizer has no end-of-text token to start from; give a prompt"
            )
        return [int(eot)]
    ids = list(tokenizer.encode(text))
    if not ids:
        raise UserError("the prompt encodes to no tokens; give a non-empty prompt")
    if max_seq_len is not None and len(ids) > max_seq_len:
        raise UserError(
            f"the prompt is {len(ids)} tokens but this model's position scheme cannot go past block_size "
            f"{max_seq_len}; shorten the prompt to at most {max_seq_len} tokens"
        )
    return ids


# ----------------------------------------------------------------------------------------------------------
# streaming text out of token ids


class StreamDecoder:
    """Turn token ids, pushed a few at a time, into text that is safe to print as it comes.

    A byte-level BPE token (gpt2) can end inside a multi-byte UTF-8 character; printing its decode at once
    would show a replacement character. With a tokenizer that exposes `decode_bytes`, bytes go through an
    incremental UTF-8 decoder that only releases complete characters. Otherwise the not-yet-printed tokens
    are decoded together and held back while their text ends in U+FFFD (at most `max_hold` tokens).
    """

    def __init__(self, tokenizer, max_hold: int = 8):
        self.tokenizer = tokenizer
        self.max_hold = max_hold
        # tiktoken's Encoding has decode_bytes; the data package's wrapper keeps it as `.enc`
        self._decode_bytes = getattr(tokenizer, "decode_bytes", None) or getattr(
            getattr(tokenizer, "enc", None), "decode_bytes", None
        )
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[int] = []

    def push(self, ids: list[int]) -> str:
        """Add tokens; return the new complete text (possibly empty)."""
        if self._decode_bytes is not None:
            return self._utf8.decode(self._decode_bytes(list(ids)))
        self._pending.extend(ids)
        text = self.tokenizer.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < self.max_hold:
            return ""
        self._pending = []
        return text

    def flush(self) -> str:
        """Whatever is still held back, decoded as is."""
        if self._decode_bytes is not None:
            return self._utf8.decode(b"", final=True)
        text = self.tokenizer.decode(self._pending) if self._pending else ""
        self._pending = []
        return text


# ----------------------------------------------------------------------------------------------------------
# generation


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


def cache_capacity(model) -> int:
    """Most positions one sample's KV cache keeps (model/generate.py's context rule).

    Absolute schemes (learned, sinusoidal) crop and re-fill at block_size; the others roll a window of
    min(window or block_size, block_size) keys.
    """
    cfg = model.config
    if getattr(model.pos, "absolute", False):
        return cfg.block_size
    return min(cfg.window or cfg.block_size, cfg.block_size)


def cache_positions(model, prompt_len: int, steps: int) -> int:
    """Positions one sample's KV cache held at its largest during a generation of `steps` tokens.

    The prompt and every produced token but the last are fed through the model; the cache keeps at most
    `cache_capacity(model)` of them.
    """
    if steps == 0:
        return 0
    return min(prompt_len + steps - 1, cache_capacity(model))


def memory_needed(
    model, dtype: torch.dtype, prompt_len: int, max_new: int, batch: int, use_cache: bool
) -> int:
    """A lower bound of the bytes one generation needs: KV cache, token buffer, logits and prefill scores."""
    cfg = model.config
    item = torch.empty((), dtype=dtype).element_size()
    kv = model.kv_cache_bytes_per_token(dtype) * cache_capacity(model) * batch if use_cache else 0
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
    pos = cache_positions(model, gen.prompt_len, gen.steps)
    total = per_tok * pos * b
    line += (
        f"; KV cache {human_bytes(total)} = {b} sample(s) x {pos} positions x {per_tok} B/token"
        f" ({str(dtype).removeprefix('torch.')})"
    )
    return line + ("; decode step compiled (compile time included)" if compiled else "")


# ----------------------------------------------------------------------------------------------------------
# entry point


def _write(out, text: str) -> None:
    if text:
        out.write(text)
        out.flush()


def sample(opts: Options, stdout=None, stderr=None, stdin=None) -> Generation:
    """Load the run, generate, print the text to `stdout` and the closing line to `stderr`."""
    from rundir.load import load_run

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    device = pick_device(opts.device)
    dtype = pick_dtype(opts.dtype, device)
    text = read_prompt(opts.prompt, opts.prompt_file, stdin)  # before loading: a bad file fails fast

    run = load_run(opts.run, device=device, step=opts.step)
    for note in run.notes:
        print(f"note: {note}", file=stderr, flush=True)
    if text is None:
        text = default_prompt(run)
    model = run.model.to(dtype=dtype).eval()
    # one decode step: the forward FLOPs of one token per sample (a third of the training FLOPs per token)
    set_threads(opts.threads, model.flops_per_token(model.config.block_size) / 3 * opts.num_samples, device)
    prompt_ids = encode_prompt(run.tokenizer, run.meta, text, getattr(model, "max_seq_len", None))
    eot_id = run.tokenizer.eot_id if opts.stop_at_eot else None
    top_k = min(opts.top_k, model.config.vocab_size) if opts.top_k else None

    check_memory(model, dtype, device, opts, len(prompt_ids))
    torch.manual_seed(opts.seed)
    on_tokens = None
    if opts.stream:
        decoder = StreamDecoder(run.tokenizer)
        if opts.echo_prompt:
            _write(stdout, text)

        def on_tokens(ids):
            _write(stdout, decoder.push(ids))

    try:
        gen = generate(
            model,
            prompt_ids,
            num_samples=opts.num_samples,
            max_new_tokens=opts.max_new_tokens,
            temperature=opts.temperature,
            top_k=top_k,
            top_p=opts.top_p,
            use_cache=opts.use_cache,
            compile=opts.compile,
            eot_id=eot_id,
            on_tokens=on_tokens,
        )
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise UserError(
            f"out of memory generating {opts.num_samples} sample(s) on {device} ({type(e).__name__}); "
            "lower num_samples or max_new_tokens"
        ) from None
    if opts.stream:
        _write(stdout, decoder.flush() + "\n")
    else:
        for row in gen.tokens:
            body = (text if opts.echo_prompt else "") + run.tokenizer.decode(row)
            _write(stdout, body + "\n")
            if opts.num_samples > 1:
                _write(stdout, opts.separator + "\n")
    print(summary_line(gen, model, dtype, opts.use_cache, bool(opts.compile)), file=stderr, flush=True)
    if (
        opts.temperature == 0
        and gen.steps
        and not any(run.tokenizer.decode(row).strip() for row in gen.tokens)
    ):
        print(
            "note: greedy decoding produced only whitespace (a small model's most likely token can be a newline "
            'forever); give a prompt, e.g. prompt="ROMEO:", or sample with temperature > 0',
            file=stderr,
        )
    return gen


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    try:
        sample(parse_options(cfg))
    except BrokenPipeError:  # e.g. `python sample.py ... | head`: stop quietly, no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
    sys.argv[1:] = exit_on_user_error(prepare_argv)("sample", sys.argv[1:], __doc__)
    main()
