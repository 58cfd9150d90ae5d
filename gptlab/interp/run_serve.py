"""heads.py serve=true as a call: ``start_server(cfg)`` (a HeadsConfig, or a mapping) loads the run (and compare=, if given) and returns the live
viewer's server (gptlab/interp/serve.py), bound and ready.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from gptlab.errors import UserError

from .heads_config import HeadsConfig, heads_config
from .run_compare import compare_target, match_method
from .run_inputs import open_run, sample_text, val_dir


def start_server(cfg: HeadsConfig | Mapping):
    """The live viewer's server for cfg (serve=true), bound and ready; `serve_forever()` runs it."""
    import errno

    from gptlab.interp.live import LiveModel
    from gptlab.interp.serve import HeadServer

    cfg = heads_config(cfg)  # port= and host= checked there (host= never empty)
    port, host = cfg.port, str(cfg.host)
    unused = [k for k in ("text", "text_file", "split") if getattr(cfg, k) is not None]
    if unused:
        print(
            f"note: {', '.join(unused)} is not used with serve=true: type the text on the page",
            file=sys.stderr,
        )
    run = open_run(cfg)
    info = {"checkpoint": run.ckpt_path.name, "step": run.step}
    live = LiveModel(
        run.model,
        run.tokenizer,
        title=f"heads of {run.run_dir.name}",
        info=info,
        sample_text=sample_text(run, val_dir(run, cfg)),
    )
    both = None
    if cfg.compare is not None:  # a second model beside it: /api/compare and the side-by-side page
        from gptlab.interp.live_compare import LiveCompare

        run_b, target = compare_target(cfg, run)
        same = (run.model.config.n_layer, run.model.config.n_head) == (
            run_b.model.config.n_layer,
            run_b.model.config.n_head,
        )
        live.title = f"{run.run_dir.name} step {run.step}"
        info_b = {"checkpoint": run_b.ckpt_path.name, "step": run_b.step}
        live_b = LiveModel(
            run_b.model, run_b.tokenizer, title=f"{run_b.run_dir.name} step {run_b.step}", info=info_b
        )
        both = LiveCompare(live, live_b, match_method(cfg, target, same))
    try:
        return HeadServer(live, host, port, compare=both)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use; pass port=<another> (port=0 picks a free one)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(
                f"port {port} needs privileges on this machine; pass port=8765 or another above 1023"
            ) from None
        raise UserError(
            f"cannot listen on host={host} port={port} ({e.strerror or e}); pass host=127.0.0.1"
        ) from None
