"""sample.py, heads.py and export.py each build one typed schema with gptlab.schema.from_mapping
(docs/architecture.md, "Config schemas"): the shipped YAML gives the dataclass's own defaults, an unknown key or
a wrong type anywhere is from_mapping's one line, a number or a path given for a path is its text, and a
dataclass built in Python checks its ranges too."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT
from hydra import compose, initialize_config_dir

from gptlab.errors import UserError
from gptlab.interop.export_config import ExportConfig, export_config
from gptlab.interp.heads_config import HeadsConfig, ProbeConfig
from gptlab.sampling import Options, parse_options


def test_the_shipped_yaml_holds_each_schemas_defaults():
    """configs/<tool>.yaml and the dataclass's defaults are the same config: a key added to one and not the other
    (or a default changed in one) fails here."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        sample = compose("sample", overrides=["run=r"])
        heads = compose("heads", overrides=["run=r"])
        export = compose("export", overrides=["run=r", "out=o"])
    assert parse_options(sample) == Options(run="r")
    assert HeadsConfig.from_mapping(heads) == HeadsConfig(run="r")
    assert export_config(export) == ExportConfig(run="r", out="o")


@pytest.mark.parametrize(
    "build, values, line",
    [
        (
            parse_options,
            {"run": "r", "bogus": 1},
            "unknown sample option(s) ['bogus']; see configs/sample.yaml",
        ),
        (
            HeadsConfig.from_mapping,
            {"run": "r", "probe": {"reps": 2, "bogus": 1}},
            "unknown key(s) ['bogus'] in probe; valid keys: batch_size, reps, seed",
        ),
        (
            HeadsConfig.from_mapping,
            {"run": "r", "timeline": "maybe"},
            "timeline must be true or false, got 'maybe'",
        ),
        (
            HeadsConfig.from_mapping,
            {"run": "r", "steps": {"metrics": "sink"}},
            "steps.metrics must be a list, got 'sink'",
        ),
        (HeadsConfig.from_mapping, {"run": "r", "layer": "abc"}, "layer must be an integer, got 'abc'"),
        (
            export_config,
            {"run": "r", "out": "o", "bogus": 1},
            "unknown key(s) ['bogus'] in the config; valid keys: run, out, format, verify, overwrite",
        ),
    ],
)
def test_unknown_keys_and_wrong_types_are_from_mappings_one_line(build, values, line):
    with pytest.raises(UserError) as e:
        build(values)
    assert str(e.value) == line


def test_a_number_or_a_path_given_for_a_path_is_its_text():
    """Hydra reads `run=2024` as the number 2024; a notebook passes a Path."""
    cfg = HeadsConfig.from_mapping({"run": 2024, "out": Path("reports") / "a", "data_dir": 7})
    assert (cfg.run, cfg.out, cfg.data_dir) == ("2024", str(Path("reports") / "a"), "7")
    assert parse_options({"run": Path("runs") / "x"}).run == str(Path("runs") / "x")
    assert export_config({"run": 1, "out": 2}) == ExportConfig(run="1", out="2")


def test_a_schema_built_in_python_checks_its_ranges():
    with pytest.raises(UserError, match=r"^port=70000 must be an integer from 0 to 65535"):
        HeadsConfig(run="r", port=70000)
    with pytest.raises(UserError, match=r"^probe.reps must be an integer >= 2, got 1$"):
        ProbeConfig(reps=1)
    with pytest.raises(UserError, match=r"^num_samples must be an integer >= 1, got 0$"):
        Options(run="r", num_samples=0)
    with pytest.raises(UserError, match=r"^format='onnx' is not known; choose one of: hf, transformer_lens$"):
        ExportConfig(run="r", out="o", format="onnx")
