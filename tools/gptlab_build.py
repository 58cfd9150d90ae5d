"""The build backend of gptlab: setuptools, except that only editable installs are allowed.

gptlab runs from its checkout (``python train.py``, ``python sample.py`` ...), like nanoGPT: its packages
have short, generic top-level names (``model``, ``data``, ``training`` ...) that must not land in a user's
site-packages, where they would shadow the user's own ``data/`` folder or nanoGPT's ``model.py``. So the
project installs no Python module at all: ``pip install -e .`` installs the dependencies and nothing else,
and the code is imported from the checkout (the current directory for the scripts and the tests; a notebook
adds the checkout to ``sys.path``, see README). A regular ``pip install .`` would give an environment that
looks installed but cannot import anything, so it is refused here with one line that says what to do.
"""

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook: editable installs, sdists)

_REFUSAL = (
    "gptlab runs from its checkout and is not installed as a package: from the checkout run "
    "`pip install -e .` (it installs the dependencies only), then `python train.py` (see README.md)"
)


def get_requires_for_build_wheel(config_settings=None):
    raise SystemExit(f"error: {_REFUSAL}")


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    raise SystemExit(f"error: {_REFUSAL}")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise SystemExit(f"error: {_REFUSAL}")


# The editable hooks are setuptools' own; named here so it is plain which installs are allowed.
get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_editable = _setuptools.build_editable
