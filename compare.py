"""Rebuild a sweep's summary (summary.md, the CSV files, plots) from its run directories, or merge sweeps.

    python compare.py multirun/positions                       # rewrite the summary in that sweep dir
    python compare.py multirun/positions multirun/kv_heads -o comparison/   # one table for both
    python compare.py multirun/positions --no-extrapolate      # skip the length-extrapolation evaluation
    python compare.py multirun/positions --baseline rope       # pair every setting with position=rope
    python compare.py multirun/seeds_0_1 multirun/seeds_2 -o merged   # the seeds of two sweeps pooled

Runs that differ only in `seed` are seeds of one setting, also across the folders given. Runs that failed or
did not finish are listed with their status, never dropped. Settings whose budget (max_iters, batch,
grad_accum, block) or data differ are not paired: one line says which (--unpaired: the tables without the
comparison). Length-extrapolation results are cached in each run's extrapolation.json, so a second call is
quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptlab.errors import UserError, exit_on_user_error
from gptlab.sweep.extrapolate import DEFAULT_MULTIPLIERS, DEFAULT_WINDOWS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python compare.py",
        description="Summarise finished runs (one table, CSV and plots) from one or more sweep directories.",
    )
    p.add_argument(
        "dirs", nargs="+", help="sweep directories (e.g. multirun/positions), run dirs, or parents"
    )
    p.add_argument(
        "-o", "--out", default=None, help="where to write; default: the sweep dir (one dir) or ./comparison"
    )
    p.add_argument("--no-extrapolate", action="store_true", help="do not evaluate the runs at longer lengths")
    p.add_argument(
        "--multipliers", type=int, nargs="+", default=list(DEFAULT_MULTIPLIERS), help="lengths, × block_size"
    )
    p.add_argument("--windows", type=int, default=DEFAULT_WINDOWS, help="val windows per evaluation length")
    p.add_argument("--device", default="auto", help="device for the evaluation: auto | cpu | cuda | mps")
    p.add_argument(
        "--baseline",
        default=None,
        help='the setting the others are paired with (e.g. rope or "position=rope, n_kv_head=4"); '
        "default: the first setting of the sweep. compare.baseline=<setting> works too",
    )
    p.add_argument(
        "--unpaired", action="store_true", help="no paired comparison (settings of different budgets)"
    )
    # train.py's spelling, compare.baseline=<setting>, is accepted as well
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [f"--baseline={a.split('=', 1)[1]}" if a.startswith("compare.baseline=") else a for a in argv]
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> Path:
    from gptlab.rundir.outdir import check_out_dir
    from gptlab.sweep.summary import CSV_FILES, print_table, summarize

    args = parse_args(argv)
    for d in args.dirs:
        if not Path(d).is_dir():
            raise UserError(
                f"{d} is not a directory; pass the sweep directory train.py -m wrote (see its log)"
            )
    if args.windows < 1 or any(m < 1 for m in args.multipliers):
        raise UserError("--windows and --multipliers must be positive integers, e.g. --multipliers 1 2 4 8")
    if not args.no_extrapolate:
        from gptlab.runtime.device import pick_device

        pick_device(args.device)  # a device that is not there: one line now, not one per run later
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else "comparison")
    # its own places: the default, or a sweep directory it reads (where the sweep wrote its summary)
    own = args.out is None or Path(out).resolve() in {Path(d).resolve() for d in args.dirs}
    out = check_out_dir(out, "compare", "-o", own=own)
    md = summarize(
        args.dirs,
        out_dir=out,
        extrapolate=not args.no_extrapolate,
        multipliers=args.multipliers,
        windows=args.windows,
        device=args.device,
        baseline=args.baseline,
        strict=True,
        pair=not args.unpaired,
    )
    print_table(md)
    written = ", ".join(name for name in CSV_FILES.values() if (Path(out) / name).is_file())
    print(f"\nwrote {md}, {written} and the plots in {out}")
    return md


if __name__ == "__main__":
    main(sys.argv[1:])
