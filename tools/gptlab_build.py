"""The build backend of gptlab: setuptools, except that only editable installs are allowed.

gptlab runs from its checkout (``python train.py``, ``python sample.py`` ...), like nanoGPT: the tools read
configs/ beside them and write runs/, and data/ keeps its prepared token files beside its code. So the project
is never copied into site-packages. ``pip install -e .`` installs the dependencies and makes one name
importable from anywhere, ``gptlab`` (setuptools' editable finder maps exactly that package to the checkout's
gptlab/; the checkout's other top-level names, ``model``, ``data``, ``train`` ..., are not put on ``sys.path``,
so they never shadow a user's own). A regular ``pip install .`` would give an installed copy cut off from
configs/ and data/, so it is refused here with one line that says what to do.
"""

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook: editable installs, sdists)

_REFUSAL = (
    "gptlab runs from its checkout and is not installed as a copy: from the checkout run "
    "`pip install -e .` (the dependencies, and `import gptlab` from any folder), then `python train.py` (see README.md)"
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
