"""Command line: tokenize a corpus into data/prepared/<name>/ (train.bin, val.bin, meta.json).

    python -m data                      # the default: data=shakespeare_char
    python -m data data=shakespeare_gpt2
    python -m data data=text_files data.path='~/books/*.txt' data.name=books

The library function is ``data.prepare(cfg)`` (data/build.py); train.py calls it at every start.
"""

from __future__ import annotations

import sys

import hydra

from gptlab.cli import prepare_argv
from gptlab.errors import exit_on_user_error

from .build import prepare
from .config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prepare")
@exit_on_user_error
def _run(cfg) -> None:
    print(prepare(cfg.data))


@exit_on_user_error
def main() -> None:
    sys.argv[1:] = prepare_argv("prepare", sys.argv[1:], __doc__)
    _run()


if __name__ == "__main__":
    main()
