"""What every entry point does with its command line before Hydra starts, so a mistake costs one line, not a page.

``prepare_argv(config_name, argv, doc)`` is the one call: ``--help`` prints the tool's own help; free-text values
(``prompt=``, ``text=``, ...) are quoted for Hydra so they arrive exactly as typed (``prompt=To be, or not to be``,
``text=What's this?``); renamed keys are mapped to their new name with a warning; a value Hydra's grammar cannot
read, or a stray word, gets one line saying how to quote it; then ``check_overrides`` refuses an unknown key or
config choice (Hydra answers those with several lines and a hint about HYDRA_FULL_ERROR) and an unusable
``hydra.run.dir`` (a traceback in Hydra). It returns the arguments to hand Hydra.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from gptlab.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the checkout's configs/, beside gptlab/

# Keys whose value is text, taken exactly as typed: never a number, list, sweep or interpolation.
FREE_TEXT = {
    "sample": ("prompt", "separator"),
    "heads": ("text",),
    "config": ("wandb.name", "wandb.group"),
}
# Keys whose value is a path: quoted for Hydra when its grammar cannot read them as typed (data.path=~/books/*.txt,
# prompt_file=notes (v2).txt); a value Hydra reads (a list, a null) keeps its meaning.
PATH_KEYS = {
    "sample": ("run", "prompt_file"),
    "heads": ("run", "text_file", "out", "data_dir", "steps.checkpoints"),
    "export": ("run", "out"),
    "config": ("init_from", "data.path", "data.out_dir"),
    "prepare": ("data.path", "data.out_dir"),
}
# Old key -> new key. The old name still works, with a one-line warning.
RENAMED = {
    "heads": {"num_threads": "threads"},
    "config": {"train.num_threads": "train.threads"},
}
# Hydra's flags that take the next argument as their value (--info takes one optionally).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}  # fmt: skip
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def prepare_argv(config_name: str, argv: list[str], doc: str | None = None) -> list[str]:
    """The checked arguments to hand Hydra (see the module doc); ``--help`` prints the help and exits 0."""
    exit_after_help(config_name, argv, doc)
    argv = [_renamed(config_name, a) for a in argv]
    if config_name == "config":
        argv = expand_seeds(argv)
    check_words(argv)
    argv = quote_free_text(config_name, argv)
    check_syntax(argv)
    check_overrides(config_name, argv)
    return argv


def exit_after_help(config_name: str, argv: list[str], doc: str | None) -> None:
    """With ``--help`` or ``-h`` in ``argv``: print the tool's help and exit 0. Entry points call this before
    their slow imports, so the help comes at once."""
    if "--help" not in argv and "-h" not in argv:
        return
    try:
        print(help_text(config_name, doc), flush=True)
    except BrokenPipeError:  # `--help | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


def hydra_quote(text: str) -> str:
    """``text`` as a Hydra quoted string that Hydra and OmegaConf turn back into exactly ``text``.

    OmegaConf would resolve ``${...}``: it is escaped as ``\\${`` (and backslashes before it doubled); Hydra
    reads a backslash as an escape only before a quote or at the end of the string: those are doubled and
    quotes escaped."""
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    text = re.sub(r'(\\*)("|\Z)', lambda m: m.group(1) * 2 + ('\\"' if m.group(2) else ""), text)
    return f'"{text}"'


@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _is_hydra_quoted(arg: str, value: str) -> bool:
    """Whether ``value`` is already one whole Hydra quoted string (``'prompt="Hello, world"'``, the old way)."""
    if len(value) < 2 or value[0] not in "\"'" or value[-1] != value[0]:
        return False
    try:
        return isinstance(_parser().parse_override(arg).value(), str)
    except Exception:
        return False


def _kinds(argv: list[str]) -> list[str]:
    """What each argument is: "flag" (``-m``, ``--cfg``), "flag value" (``job`` after ``--cfg``), "override"
    (``key=value``), "delete" (``~key``) or "stray" (a word that is none of these)."""
    kinds, wants_value = [], None
    for a in argv:
        if (
            wants_value
            and not a.startswith("-")
            and (wants_value not in ("--info", "-i") or a in _INFO_CHOICES)
        ):
            kinds.append("flag value")
            wants_value = None
            continue
        wants_value = None
        if a.startswith("-"):
            kinds.append("flag")
            wants_value = a if a in _FLAGS_WITH_VALUE or a in ("--info", "-i") else None
        elif "=" in a:
            kinds.append("override")
        else:
            kinds.append("delete" if a.startswith("~") else "stray")
    return kinds


def quote_free_text(config_name: str, argv: list[str]) -> list[str]:
    """``argv`` with every free-text value (FREE_TEXT) quoted for Hydra, so it reaches the config as typed, and
    every path (PATH_KEYS) that Hydra's grammar cannot read.

    A value that already is one Hydra quoted string is left as it is (its outer quotes go, as they always did)."""
    text_keys, path_keys = FREE_TEXT.get(config_name, ()), PATH_KEYS.get(config_name, ())
    out = []
    for a, kind in zip(argv, _kinds(argv)):
        if kind == "override":
            key, value = a.split("=", 1)
            name = key.lstrip("+")
            if (name in text_keys and not _is_hydra_quoted(a, value)) or (
                name in path_keys and not _readable(a)
            ):
                a = f"{key}={hydra_quote(value)}"
        out.append(a)
    return out


def _readable(arg: str) -> bool:
    """Whether Hydra's grammar reads the override ``arg``."""
    try:
        _parser().parse_override(arg)
        return True
    except Exception:
        return False


def check_words(argv: list[str]) -> None:
    """One line for a stray word: most often the rest of a value with spaces that the shell split off."""
    previous = None  # the override just before
    for a, kind in zip(argv, _kinds(argv)):
        if kind == "stray":
            hint = (
                f"; to pass text with spaces, quote it in the shell: {_shell(f'{previous} {a}')}"
                if previous
                else ""
            )
            raise UserError(f"{a!r} is not key=value{hint}")
        previous = a if kind == "override" else None


def check_syntax(argv: list[str]) -> None:
    """One line for a value Hydra's grammar cannot read (saying how to quote it), or a comma list outside a
    sweep (Hydra's "Ambiguous value" page)."""
    multirun = any(a in ("-m", "--multirun", "hydra.mode=MULTIRUN") for a in argv)
    parser = _parser()
    for a, kind in zip(argv, _kinds(argv)):
        if kind != "override":
            continue
        key, value = a.split("=", 1)
        quoted = _shell(f"{key}={hydra_quote(value)}")
        try:
            o = parser.parse_override(a)
        except Exception as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"Hydra cannot read {a} ({why}); quote the value for Hydra: {quoted}") from None
        if o.is_sweep_override() and not multirun:
            raise UserError(
                f"{a} is a sweep (a comma list, range or glob); for one value that holds a comma quote it for "
                f"Hydra: {quoted}; to sweep over the values add -m"
            )


def _shell(arg: str) -> str:
    """``arg`` quoted for a POSIX shell, as a user would type it."""
    return shlex.quote(arg)


def _renamed(config_name: str, arg: str) -> str:
    """``arg`` with a renamed key (RENAMED) replaced by its new name, and a one-line warning."""
    if arg.startswith("-") or "=" not in arg:
        return arg
    key, value = arg.split("=", 1)
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    new = RENAMED.get(config_name, {}).get(key[len(prefix) :])
    if new is None:
        return arg
    print(f"warning: {key[len(prefix) :]}= is now {new}=; the old name will stop working", file=sys.stderr)
    return f"{prefix}{new}={value}"


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
    cfg = _compose(config_name, tuple(choices))
    for prefix, key, _ in overrides:
        if prefix or key in groups or key.startswith(("hydra.", "hydra/")):
            continue  # +key adds a key, ~key deletes one, group choices were checked above
        _check_key(cfg, key)


@functools.lru_cache(maxsize=32)
def _compose(config_name: str, choices: tuple[str, ...]):
    """The config with these group choices (read only: cached for callers that check many command lines)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(choices))


def _check_key(cfg, key: str) -> None:
    from omegaconf import DictConfig

    node, path = cfg, list[str]()
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            where = ".".join(path)
            valid = sorted(map(str, node.keys())) if isinstance(node, DictConfig) else []
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


# ------------------------------------------------------------------------------------------------------- --help


def help_text(config_name: str, doc: str | None) -> str:
    """The tool's ``--help``: its description (the entry point's docstring) and its options, each with its
    default and the comment the config file gives it."""
    import textwrap

    lines = [(doc or "").strip(), ""]
    path = CONFIG_DIR / f"{config_name}.yaml"
    groups = _groups()
    picks = [(g, choice, comment) for g, choice, comment in _default_groups(path) if g in groups]
    if picks:
        lines.append("Config groups (group=choice; configs/<group>/):")
        for g, choice, comment in picks:
            others = [c for c in groups[g] if c not in (choice, "base")]
            also = f" (also: {', '.join(others)})" if others else ""
            lines.append(f"  {f'{g}={choice}':<30} {comment}{also}")
            keys = ", ".join(k for k, _, _ in _commented_keys(_fields_file(g, choice)))
            lines += textwrap.wrap(
                f"{g}.<key>=... sets one field: {keys}",
                110,
                initial_indent=" " * 4,
                subsequent_indent=" " * 6,
            )
    options = _commented_keys(path)
    if options:
        lines.append(f"Options (key=value; each is commented in configs/{config_name}.yaml):")
        for key, default, comment in options:
            lines.append(f"  {f'{key}={default}':<30} {comment}".rstrip())
    free = FREE_TEXT.get(config_name)
    if free:
        lines.append(
            f"Text values ({', '.join(k + '=' for k in free)}) are taken exactly as typed; quote them for the "
            f'shell only: {free[0]}="To be, or not to be".'
        )
    lines.append("Hydra's own help: --hydra-help; the whole composed config: --cfg job.")
    return "\n".join(lines)


_KEY_LINE = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$"
)


def _commented_keys(path: Path) -> list[tuple[str, str, str]]:
    """(dotted key, default as written, comment) of each setting in a config file, in order; the defaults
    list and the hydra section left out."""
    out: list[tuple[str, str, str]] = []
    parents: list[tuple[int, str]] = []  # (indent, key) of the sections around the current line
    skip_indent = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"]
        if skip_indent is not None and indent > skip_indent:
            continue
        skip_indent = None
        while parents and parents[-1][0] >= indent:
            parents.pop()
        if not parents and key in ("defaults", "hydra"):
            skip_indent = indent
            continue
        dotted = ".".join([p for _, p in parents] + [key])
        value = m["value"].strip()
        if value:
            out.append((dotted, value, (m["comment"] or "").strip()))
        else:
            parents.append((indent, key))
    return out


_DEFAULTS_LINE = re.compile(r"^\s*-\s*(?P<group>[\w]+):\s*(?P<choice>[\w.-]+)\s*(?:#\s*(?P<comment>.*))?$")


def _default_groups(path: Path) -> list[tuple[str, str, str]]:
    """(group, choice, comment) of each ``- group: choice  # comment`` line of a config's defaults list."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _DEFAULTS_LINE.match(line)
        if m:
            out.append((m["group"], m["choice"], (m["comment"] or "").strip()))
    return out


def _fields_file(group: str, choice: str) -> Path:
    """The file that lists every field of a group: its base.yaml where the choices extend one."""
    base = CONFIG_DIR / group / "base.yaml"
    return base if base.is_file() else CONFIG_DIR / group / f"{choice}.yaml"


SEEDS_KEY = "seeds"


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def expand_seeds(argv: list[str]) -> list[str]:
    """`argv` with train.py's `seeds=N` replaced by the Hydra sweep `seed=0,...,N-1` (each job then has its own
    `seed=<s>` in its folder name and summary); a one-line UserError for a bad N, a missing -m, or `seed=`
    given too. Runs that differ only in `seed` are seeds of one setting however the seeds were given
    (sweep.settings pools them); a seed sets initialisation, batch order and dropout together, so the same seed
    gives every setting the same batches and settings are compared seed by seed."""
    given = [a for a in argv if "=" in a and _key(a) == SEEDS_KEY]
    if not given:
        return list(argv)
    if len(given) > 1:
        raise UserError(
            f"seeds= is given {len(given)} times ({', '.join(given)}); give it once, e.g. seeds=3"
        )
    value = given[0].split("=", 1)[1].strip()
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < 1 or str(n) != value.lstrip("+"):
        raise UserError(
            f"seeds={value} must be a positive integer: the number of seeds per setting, e.g. seeds=3"
        )
    if not any(a in ("-m", "--multirun") for a in argv):
        raise UserError(
            f"seeds={n} trains every setting with {n} seeds, which is a sweep: add -m "
            f"(python train.py -m ... seeds={n}); a single run takes seed=<int>"
        )
    if any("=" in a and _key(a) == "seed" for a in argv):
        raise UserError(f"give seeds={n} (seeds 0..{n - 1}) or seed=<list>, not both")
    seeds = ",".join(str(s) for s in range(n))
    return [f"seed={seeds}" if a == given[0] else a for a in argv]
