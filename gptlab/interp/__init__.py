"""Head inspection: per-head metrics, ablations, plots and the HTML page behind heads.py (see docs/heads.md).

metrics   pure functions on attention patterns (entropy, distance, previous-token, sink, induction, ...)
probe     the repeated-random-tokens probe batch
ablation  zero / mean ablation importance through blocks.{l}.attn.hook_z
tracking  head_metrics_snapshot: the cheap per-step snapshot train.py logs
circuits  from the weights: Q/K/V composition (+ random baseline), OV copying; on a text: DLA, logit lens
report    analyse a model, write heads.csv/json, composition.csv, PNGs and heads.html, the terminal summary
live      the live viewer's analysis of one text (patterns, metrics, DLA, ablations, predictions)
serve     its HTTP server (heads.py serve=true); live_page its page
plots, html, steps
page_common  makes a self-contained page of the web code in gptlab/interp/web (heads.html, live.html, compare.html,
             compare_live.html, their .css/.js)
pattern_codec  how patterns travel to the pages (uint16, uint8 per row past 512 tokens, thumbnails)
run_report, run_compare, run_serve   heads.py's work as calls (run_report(cfg), run_compare(cfg),
          start_server(cfg)); run_inputs: what they read (the run, its val data, the text, the probe);
          heads_config: HeadsConfig, heads.py's config as one typed schema (configs/heads.yaml)
"""
