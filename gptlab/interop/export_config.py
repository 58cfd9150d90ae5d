"""export.py's config (configs/export.yaml) as one typed schema: ``ExportConfig``, built and checked by
``export_config(cfg)`` (gptlab.schema.from_mapping: unknown keys and types; the rest in ``__post_init__``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gptlab.errors import UserError
from gptlab.schema import from_mapping, refuse, text

FORMATS = ("hf", "transformer_lens")
_BOOL = {"expected": "true or false"}  # null too: "verify must be true or false, got None"


@dataclass
class ExportConfig:
    """The validated options of one export (configs/export.yaml documents each)."""

    run: str | None = text()  # required: a run directory, a checkpoint .pt, an HF directory or hub id
    out: str | None = text()  # required: the directory to write
    format: str = field(
        default="hf",
        metadata={"error": f"{{name}}={{value!r}} is not known; choose one of: {', '.join(FORMATS)}"},
    )
    verify: bool = field(default=True, metadata=_BOOL)
    overwrite: bool = field(default=False, metadata=_BOOL)

    def __post_init__(self) -> None:
        if not self.run:
            raise UserError("pass run=<run directory, checkpoint .pt, or HF model directory>")
        if not self.out:
            raise UserError("pass out=<directory to write the Hugging Face model into>")
        if self.format not in FORMATS:
            raise refuse(self, "format", self.format)


def export_config(cfg: ExportConfig | Mapping) -> ExportConfig:
    """``cfg`` typed: itself if it is an ExportConfig, else built from the mapping (a Hydra config or a dict)."""
    return cfg if isinstance(cfg, ExportConfig) else from_mapping(ExportConfig, cfg)
