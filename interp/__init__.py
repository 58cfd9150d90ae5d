"""Head inspection: per-head metrics, ablations, plots and the HTML page behind heads.py (see docs/heads.md).

metrics   pure functions on attention patterns (entropy, distance, previous-token, sink, induction, ...)
probe     the repeated-random-tokens probe batch
ablation  zero / mean ablation importance through blocks.{l}.attn.hook_z
tracking  head_metrics_snapshot: the cheap per-step snapshot train.py logs
report    analyse a model, write heads.csv/json, PNGs and heads.html, the terminal summary
plots, html, steps
"""
