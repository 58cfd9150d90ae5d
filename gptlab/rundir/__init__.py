"""The run directory: the one owner of every file a run writes and every tool reads.

    files       atomic writes (temp file + rename, umask honoured) and tolerant readers (JSON, JSONL, YAML)
    checkpoint  save / load / resolve checkpoints (``torch.save`` dicts, always loaded ``weights_only``)
    layout      ``RunDir``: the files of one run (config, checkpoints, metrics, summary, lock) and their rules
    load        ``Run``: one checkpoint file -> model, tokenizer and config, ready to use; the weight checks
    outdir      ``check_out_dir``: where a tool may write (``out=``) and what it may replace there

``files``, ``checkpoint``, ``layout`` and ``outdir`` import nothing from the project (so ``data`` can use them); ``load``
sits above ``model`` and ``data``. ``load_run`` (a run directory, checkpoint, HF directory or hub id -> a ``Run``)
is not here: it hands HF sources to ``interop``, which reads checkpoints through ``load``, so it sits above both,
in ``gptlab.open_run``. Import the module you need (``from gptlab.rundir.load import Run``): this package file
imports nothing, so no import cycle can hide here.
"""
