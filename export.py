"""Export a run as a Hugging Face model directory: `python export.py run=<run dir> out=<dir> [format=...]`.

    python export.py run=runs/my_run out=exports/my_run                       # GPT-2 / Llama / Mistral directory
    python export.py run=runs/my_run out=exports/my_run format=transformer_lens   # also checked in TransformerLens

The directory holds config.json, model.safetensors (never a pickle), generation_config.json and, for runs whose
tokenizer has a Hugging Face form (gpt2, char, ids, hf), the tokenizer files; `transformers.AutoModelForCausalLM
.from_pretrained(out)` then computes our logits (checked before the directory appears). Which architectures
map to which class, and the one line you get for one that maps to none: docs/interop.md.
"""

from __future__ import annotations

import signal
import sys

from gptlab.errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from gptlab.cli import exit_after_help

    exit_after_help("export", sys.argv[1:], __doc__)  # --help at once, before the slow imports

from collections.abc import Mapping

import hydra
from omegaconf import DictConfig

from gptlab.cli import prepare_argv
from gptlab.errors import exit_on_user_error
from gptlab.interop.export_config import ExportConfig, export_config


def export(cfg: ExportConfig | Mapping) -> dict:
    """Load the run, write and check the export; returns interop.hf.export_hf's report. ``cfg`` is the typed
    config, or a mapping it is built from (checked: one line if wrong)."""
    from gptlab.interop.hf import export_hf
    from gptlab.open_run import load_run
    from gptlab.rundir.outdir import check_out_dir, mark_out_dir

    cfg = export_config(cfg)
    # overwrite=true only ever replaces an earlier export (marked .gptlab-export), never a run or a user's folder
    out = check_out_dir(cfg.out, "export", "out", sources=[cfg.run], overwrite=cfg.overwrite, claim=False)
    run = load_run(cfg.run, device="cpu")
    report = export_hf(run, out, fmt=cfg.format, verify=cfg.verify, overwrite=cfg.overwrite)
    mark_out_dir(out, "export")
    return report


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
@exit_on_user_error
def main(config: DictConfig) -> None:
    cfg = export_config(config)  # the typed config, checked once (configs/export.yaml)
    try:
        rep = export(cfg)
    except KeyboardInterrupt:  # export_hf removes its unfinished folder on the way out
        print("\ninterrupted; the export was not written (out= is as it was)", file=sys.stderr)
        sys.exit(130)
    checks = ", ".join(f"{k} {v:.1e}" for k, v in rep["gaps"].items()) or "not checked (verify=false)"
    tokenizer = (
        "with tokenizer files" if rep["tokenizer"] else "no tokenizer files (this tokenizer has no HF form)"
    )
    print(f"wrote {rep['class']} to {rep['out']} ({tokenizer}); logit gap to ours: {checks}")
    if rep.get("note"):
        print(f"note: {rep['note']}")
    if cfg.format == "transformer_lens":
        boot = f"TransformerBridge.boot_transformers('{rep['out']}')"
        if rep[
            "no_bos"
        ]:  # a char or ids tokenizer: TransformerLens would invent a BOS id past the vocabulary
            boot = f"from gptlab.interop.tl import fit_special_tokens; fit_special_tokens({boot})"
        print(f"load it: from transformer_lens import TransformerBridge; {boot}")
    else:
        print(
            f"load it: from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('{rep['out']}')"
        )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
    sys.argv[1:] = exit_on_user_error(prepare_argv)("export", sys.argv[1:], __doc__)
    main()
