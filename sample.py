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

from gptlab.errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from gptlab.cli import exit_after_help

    exit_after_help("sample", sys.argv[1:], __doc__)  # --help at once, before the slow imports

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gptlab.cli import prepare_argv
from gptlab.errors import exit_on_user_error
from gptlab.sampling import parse_options, sample

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # absolute: works from any cwd or importer


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
