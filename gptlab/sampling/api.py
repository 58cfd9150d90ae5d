"""sample.py's work as one call: ``sample(opts)`` loads the run, generates, prints the text and the closing line."""

from __future__ import annotations

import sys

import torch

from gptlab.errors import UserError
from gptlab.runtime.device import pick_device, pick_dtype, set_threads

from .batch import Generation, check_memory, generate, summary_line
from .options import Options
from .prompt import default_prompt, encode_prompt, read_prompt
from .stream import StreamDecoder


def _write(out, text: str) -> None:
    if text:
        out.write(text)
        out.flush()


def sample(opts: Options, stdout=None, stderr=None, stdin=None) -> Generation:
    """Load the run, generate, print the text to `stdout` and the closing line to `stderr`."""
    from gptlab.open_run import load_run

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
