"""heads.py's config (configs/heads.yaml) as one typed schema: ``HeadsConfig`` and its sections, field for field.

    HeadsConfig.from_mapping(cfg)   the typed config from the composed config (a Hydra config or a dict), built
                                    by gptlab.schema.from_mapping: unknown keys and types; ranges and choices
                                    are each dataclass's ``__post_init__``
    heads_config(cfg)               ``cfg`` if it is one already, else built from it (run_report, run_compare
                                    and start_server take either)

What needs the model (layer= and head= in range, the text's length) is checked where the model is loaded
(gptlab/interp/run_inputs.py, run_report.py, run_compare.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptlab.errors import UserError
from gptlab.schema import check_counts, count, from_mapping, refuse
from gptlab.schema import text as text_field  # `text` is a field here

STEP_METRICS = ["induction", "prev_token", "sink", "entropy"]  # steps.metrics' default


@dataclass
class ProbeConfig:
    """Repeated random tokens for the induction and duplicate-token scores."""

    batch_size: int = count(4, 1)
    reps: int = count(2, 2)
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "probe")


@dataclass
class MetricsConfig:
    batch_size: int = count(2, 1)  # val rows for entropy, distance, previous-token, sink, local

    def __post_init__(self) -> None:
        check_counts(self, "metrics")


@dataclass
class IclConfig:
    batches: int = count(1, 0, " (0 = no ICL score)")  # val batches for the ICL score and the val loss
    batch_size: int = count(8, 1)

    def __post_init__(self) -> None:
        check_counts(self, "icl")


@dataclass
class AblationConfig:
    enabled: bool = True
    batches: int = count(1, 0, " (0 = no ablations)")
    batch_size: int = count(4, 1)
    seq_len: int | None = count(128, 2, " (or null = block_size)")

    def __post_init__(self) -> None:
        check_counts(self, "ablation")


@dataclass
class StepsConfig:
    metrics: list[str] = field(default_factory=lambda: list(STEP_METRICS))
    checkpoints: str | None = text_field()  # a glob of checkpoint files
    only: bool = False


@dataclass
class HeadsConfig:
    """configs/heads.yaml, typed (it documents every key)."""

    run: str | None = text_field()  # required: __post_init__ refuses None and ""
    step: Any = None  # a step number, best or last (open_run resolves it)
    text: str | None = text_field()
    text_file: str | None = text_field()
    split: str | None = field(default=None, metadata={"error": "{name}={value!r} is not val or train"})
    max_tokens: int | None = count(
        None, 2, error="{name}={value!r} must be an integer >= 2 (a pattern needs two tokens)"
    )
    out: str | None = text_field()
    device: str = text_field("cpu")
    layer: int = 0
    head: int = 0
    data_dir: str | None = text_field()
    top: int = count(3, 1)
    threads: int | None = count(None, 1, " (or null = automatic)")
    compare: str | None = text_field()
    compare_match: str = text_field("auto", error="{name}={value!r} must be auto, similarity or position")
    timeline: bool = True
    serve: bool = False
    port: int = field(
        default=8765,
        metadata={"error": "{name}={value!r} must be an integer from 0 to 65535 (0 = any free port)"},
    )
    host: str | None = text_field("127.0.0.1")
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    icl: IclConfig = field(default_factory=IclConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    steps: StepsConfig = field(default_factory=StepsConfig)

    def __post_init__(self) -> None:
        if not self.run:
            raise UserError("pass run=<run directory or checkpoint .pt>")
        check_counts(self)
        if self.split not in (None, "", "val", "train"):  # "" is null: the default text
            raise refuse(self, "split", self.split)
        if self.compare_match not in ("auto", "similarity", "position"):
            raise refuse(self, "compare_match", self.compare_match)
        if not 0 <= self.port <= 65535:
            raise refuse(self, "port", self.port)
        if self.host is None or not self.host.strip():  # the socket library reads "" as every address
            raise UserError(
                "host= is empty; pass host=127.0.0.1 (this machine only), or an address to be reached from the "
                "network (host=0.0.0.0 for all of this machine's addresses)"
            )

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> HeadsConfig:
        return from_mapping(cls, cfg)


def heads_config(cfg: HeadsConfig | Mapping) -> HeadsConfig:
    """``cfg`` typed: itself if it is a HeadsConfig, else built from the mapping (checked, one line if wrong)."""
    return cfg if isinstance(cfg, HeadsConfig) else HeadsConfig.from_mapping(cfg)
