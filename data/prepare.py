"""Command line: tokenize a corpus into data/prepared/<name>/ (train.bin, val.bin, meta.json).

    python -m data.prepare                      # the default: data=shakespeare_char
    python -m data.prepare data=shakespeare_gpt2
    python -m data.prepare data=text_files data.path='~/books/*.txt' data.name=books

The library function is ``data.prepare(cfg)`` (data/build.py); train.py calls it at every start.
"""

from __future__ import annotations

import sys
import types

from gptlab_errors import exit_on_user_error

from .build import prepare
from .config import CONFIG_DIR, check_data_choice


@exit_on_user_error
def main() -> None:
    import hydra

    check_data_choice(sys.argv[1:])

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prepare")
    def _run(cfg) -> None:
        print(exit_on_user_error(prepare)(cfg.data))  # Hydra would print a traceback for a UserError

    _run()


class _CallableModule(types.ModuleType):
    """``import data.prepare`` rebinds ``data.prepare`` from the function to this module; keep it callable."""

    def __call__(self, *args, **kwargs):
        return prepare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
