"""Command-line checks every entry point runs before Hydra starts, so a mistake costs one line, not a page.

Hydra answers an unknown key or config choice with several lines and a hint about HYDRA_FULL_ERROR, and
fails with a traceback when ``hydra.run.dir`` is a file. ``check_overrides(config_name, argv)`` finds those
mistakes first and raises one :class:`UserError` that lists what is valid.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gptlab_errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _groups() -> dict[str, list[str]]:
    """Config groups (folders of configs/) and their choices."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()
    }


def _split(argv: list[str]) -> list[tuple[str, str, str]]:
    """(prefix, key, value) of each ``key=value`` override; flags (-m, --cfg job) are left out."""
    out = []
    for a in argv:
        if a.startswith("-") or "=" not in a:
            continue
        key, value = a.split("=", 1)
        prefix = key[: len(key) - len(key.lstrip("+~"))]
        out.append((prefix, key[len(prefix) :], value))
    return out


def _check_run_dir(value: str, key: str = "hydra.run.dir") -> None:
    p = Path(value).expanduser()
    if "$" in value or "," in value:  # an interpolation or a sweep: Hydra resolves it
        return
    if p.exists() and not p.is_dir():
        raise UserError(f"{key}={value} is a file; pass a directory")
    parent = next((q for q in [p, *p.parents] if q.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key}={value}: {parent} is not writable; pass a directory you can write to")
    if parent is not None:  # root passes os.access everywhere, but /proc, /sys or a read-only mount refuse
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".gptlab-probe-", dir=parent))
        except OSError as e:
            raise UserError(
                f"{key}={value}: cannot make a folder in {parent} ({e.strerror}); "
                "pass a directory you can write to"
            ) from None


def check_overrides(config_name: str, argv: list[str]) -> None:
    """Raise a one-line UserError for an unknown config choice or key, or an unusable hydra.run.dir."""
    groups = _groups()
    overrides = _split(argv)
    choices = []
    for prefix, key, value in overrides:
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            _check_run_dir(value, key)
        if key in groups:
            for name in value.split(","):  # a sweep lists several
                if name and name not in groups[key]:
                    raise UserError(f"unknown {key} config {name!r}; choose one of {', '.join(groups[key])}")
            choices.append(f"{prefix}{key}={value.split(',')[0]}")
    cfg = _compose(config_name, choices)
    for prefix, key, _ in overrides:
        if prefix or key in groups or key.startswith(("hydra.", "hydra/")):
            continue  # +key adds a key, ~key deletes one, group choices were checked above
        _check_key(cfg, key)


def _compose(config_name: str, choices: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=choices)


def _check_key(cfg, key: str) -> None:
    from omegaconf import DictConfig

    node, path = cfg, []
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            where = ".".join(path)
            valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
            scope = f"valid keys in {where}" if where else "valid top-level keys"
            raise UserError(
                f"unknown config key {key!r}; {scope}: {', '.join(map(str, valid))} "
                f"(+{key}=... adds a new key)"
            )
        node = node[part]
        path.append(part)


def read_text_file(path: str, option: str) -> str:
    """The UTF-8 text of a file a user named on the command line (``option=path``), or one UserError line."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{option}={p} is a directory; give a UTF-8 text file")
    if not p.is_file():
        raise UserError(f"{option}={p} does not exist; give a UTF-8 text file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{option}={p} is not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. "
            f"iconv -f latin1 -t utf-8 {p.name}"
        ) from None
    except OSError as e:
        raise UserError(f"{option}={p} cannot be read ({e.strerror})") from None
