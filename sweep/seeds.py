"""`seeds=N` on train.py's command line: train every setting of a multirun with seeds 0 .. N-1.

    python train.py -m +experiment=positions seeds=3     # = python train.py -m +experiment=positions seed=0,1,2

It is shorthand for the Hydra sweep `seed=0,1,...,N-1`, so each job gets its own `seed=<s>` override (in its
folder name and its summary). Runs that differ only in `seed` are seeds of one setting however the seeds
were given (`seeds=3`, `seed=0,1,2`, `seed=range(3)`, or separate sweeps merged by compare.py): the summary
pools them (sweep.settings). A seed sets the weights' initialisation, the order of the training batches and
dropout together; the same seed gives every setting the same batches in the same order, so settings are
compared seed by seed.
"""

from __future__ import annotations

from gptlab_errors import UserError

KEY = "seeds"


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def expand_seeds(argv: list[str]) -> list[str]:
    """`argv` with `seeds=N` replaced by `seed=0,...,N-1`; a one-line UserError for a bad N, a missing -m, or
    `seed=` given too."""
    given = [a for a in argv if "=" in a and _key(a) == KEY]
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
