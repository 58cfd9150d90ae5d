"""Inspect the learned attention heads of a run: `python heads.py run=<run dir or .pt> [text=... | text_file=... |
split=val] [out=...]` (config: configs/heads.yaml; metric definitions: docs/heads.md).

Writes into `<run>/heads/` (or `out=`; for a Hugging Face model folder runs/hf/<its name>/heads/): heads.csv,
heads.json, composition.csv, heatmap_<metric>.png, patterns_grid.png, pattern_L<l>H<h>.png, composition.png,
logit_lens.png, heads.html, and heads_over_steps_<metric>.png when the run logged head metrics; prints the top
heads of each kind.

`serve=true` instead starts the live viewer (gptlab/interp/serve.py): a local page where any typed text is run
through the model (`port=8765 host=127.0.0.1`).

`compare=<B>` (another run, an HF directory of the same tokenizer, or `step:N` of this run) measures both models
on the same text, matches their heads and writes compare.csv, compare.md and compare.html instead (with
`serve=true`: both models side by side in the live viewer).
"""

from __future__ import annotations

import signal
import sys

from gptlab.errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from gptlab.cli import exit_after_help

    exit_after_help("heads", sys.argv[1:], __doc__)  # --help at once, before the slow imports

import hydra
from omegaconf import DictConfig

from gptlab.cli import prepare_argv
from gptlab.errors import exit_on_user_error
from gptlab.interp.heads_config import HeadsConfig, heads_config
from gptlab.interp.run_compare import run_compare
from gptlab.interp.run_report import run_report
from gptlab.interp.run_serve import start_server


def serve(cfg: HeadsConfig) -> None:
    """Run the live viewer until Ctrl-C."""
    server = start_server(cfg)
    exposed = (
        ""
        if server.loopback_only
        else " (reachable from the network: anyone who can reach it can run the model)"
    )
    print(f"live head viewer: open {server.url}{exposed}; Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()


@hydra.main(version_base="1.3", config_path="configs", config_name="heads")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    try:
        _main(heads_config(cfg))  # the typed config, checked once (configs/heads.yaml)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


def _main(cfg: HeadsConfig) -> None:
    if cfg.serve:
        return serve(cfg)
    if cfg.compare is not None:
        res = run_compare(cfg)
        for line in res["summary"] + [f"note: {n}" for n in res["notes"]]:
            print(line)
        print(
            f"wrote {len(res['files'])} files to {res['out']} in {res['timings']['total_s']:.1f} s; "
            f"open {res['files']['html']}"
        )
        return None
    res = run_report(cfg)
    for line in res["summary"]:
        print(line)
    for note in res.get("notes", []):
        print(f"note: {note}")
    if "out" in res:
        t = res["timings"]
        print(
            f"wrote {len(res['files'])} files to {res['out']} in {t['total_s']:.1f} s "
            f"(patterns {t['patterns_s']:.1f} s, ablations {t['ablation_s']:.1f} s, circuits {t['circuits_s']:.1f} s, "
            f"PNGs {t['png_s']:.1f} s, timeline {t['timeline_s']:.1f} s, "
            f"page {t['html_s']:.1f} s); open {res['out'] / 'heads.html'}"
        )
    else:
        for f in res["files"]:
            print(f"wrote {f}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
    sys.argv[1:] = exit_on_user_error(prepare_argv)("heads", sys.argv[1:], __doc__)
    main()
