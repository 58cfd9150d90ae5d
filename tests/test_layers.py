"""The layering of docs/architecture.md, read off the import statements of every module (function-level
imports included, so no dependency can hide inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = (
    ROOT / "gptlab"
)  # the library; model/ and data/ stay at the top (gptlab.model, gptlab.data link to them)
TOP_PACKAGES = ("model", "data")
PACKAGES = ("model", "data", "rundir", "runtime", "training", "interp", "sweep", "interop", "sampling")
TOOLS = ("train", "sample", "heads", "export", "compare")
ENTRY_POINTS = [ROOT / f"{tool}.py" for tool in TOOLS] + [ROOT / "data" / "__main__.py"]
MAX_ENTRY_POINT_LINES = 150  # options, dispatch, printing: the work is in the packages


def src(name: str) -> Path:
    """Where a package or bottom module of the lab lives: model/ and data/ at the top, the rest in gptlab/."""
    return ROOT / name if name.split("/")[0] in TOP_PACKAGES else LIB / name


def lab_name(name: str) -> str:
    """A module name as the layering speaks of it: ``gptlab.rundir.files`` -> ``rundir.files``, ``gptlab`` -> ''."""
    return "" if name == "gptlab" else name.removeprefix("gptlab.")


def project_imports(path: Path) -> set[str]:
    """The project's packages and tool modules that ``path`` imports (first dotted part after ``gptlab.``;
    relative = own package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from gptlab import sampling` imports the package sampling
            names = [a.name for a in node.names] if node.module == "gptlab" else [node.module]
        for name in map(lab_name, names):
            top = name.split(".")[0]
            if top in PACKAGES or top in TOOLS or top in ("cli", "errors", "schema", "open_run"):
                found.add(name if top == "rundir" else top)
    return found


def imports_of(package: str) -> set[str]:
    out = set()
    for f in src(package).rglob("*.py"):
        if f.name != "__main__.py":  # `python -m data` is an entry point, above every package
            out |= project_imports(f)
    return out - {package}


# package -> what it may import from the project (besides itself, errors and schema: the bottom layer)
ALLOWED = {
    "model": set(),
    "runtime": set(),
    "data": {"rundir.files", "rundir.outdir"},
    "rundir": {"model", "data"},
    "interop": {"model", "data", "rundir.load", "rundir.checkpoint", "rundir.files"},  # never open_run
    "sampling": {"model", "data", "runtime", "cli", "open_run"},
    "interp": {
        "model",
        "data",
        "rundir.files",
        "rundir.load",
        "open_run",
        "rundir.checkpoint",
        *(
            "runtime",
            "cli",
            "interop",
            "rundir.layout",
            "rundir.outdir",
        ),  # heads.py's API: gptlab/interp/run_*.py only
    },
    "sweep": {
        "model",
        "data",
        "runtime",
        "rundir.files",
        "rundir.load",
        "open_run",
        "rundir.checkpoint",
        "rundir.layout",
    },
    "training": {
        "model",
        "data",
        "runtime",
        "interp",
        "interop",
        "cli",
        "rundir.files",
        "rundir.checkpoint",
        "rundir.layout",
        "rundir.load",
    },  # fmt: skip
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    extra = imports_of(package) - ALLOWED[package] - {"errors", "schema"}
    assert not extra, f"{package} imports {sorted(extra)}, which docs/architecture.md does not allow"


def test_schema_imports_nothing_of_the_project_but_errors():
    """gptlab/schema.py (the config check every layer may use) sits at the bottom, beside gptlab/errors.py."""
    assert project_imports(LIB / "schema.py") <= {"errors"}
    assert project_imports(LIB / "errors.py") == set()


def test_rundir_files_checkpoint_and_layout_import_nothing_of_the_project():
    for name in ("files", "checkpoint", "layout", "outdir"):
        assert project_imports(LIB / "rundir" / f"{name}.py") <= {"errors"}, name


def test_open_run_sits_above_both_loaders():
    """rundir.load (Run, a checkpoint file as a run) sits on model and data; the dispatcher that hands a Hugging
    Face directory or hub id to interop.hf is gptlab/open_run.py, above rundir and interop, so no arrow runs back
    up from rundir to interop."""
    assert project_imports(LIB / "rundir" / "load.py") <= {"model", "data", "errors"}
    assert project_imports(LIB / "open_run.py") <= {
        "errors", "rundir.checkpoint", "rundir.layout", "rundir.load", "interop"
    }  # fmt: skip


@pytest.mark.parametrize("tool", TOOLS)
def test_tools_never_import_each_other_or_the_training_internals(tool):
    got = project_imports(ROOT / f"{tool}.py")
    assert not (got & set(TOOLS)) - {tool}, f"{tool}.py imports another tool: {sorted(got & set(TOOLS))}"
    if tool != "train":
        assert "training" not in got, f"{tool}.py imports training (the train tool's internals)"
    for package in ("interp", "sweep", "interop", "rundir", "runtime"):
        assert "training" not in imports_of(package), f"{package} imports training"


def test_only_the_heads_api_of_interp_reaches_the_tool_layers():
    """gptlab/interp/run_*.py (heads.py's callable API) pick the device, read text files, name output folders and find
    Hugging Face run folders; the analysis modules below them take a model and tensors and know none of that."""
    tool_layers = {"runtime", "cli", "interop", "rundir.layout", "rundir.outdir"}
    for f in (LIB / "interp").glob("*.py"):
        if not f.name.startswith("run_"):
            assert not project_imports(f) & tool_layers, (
                f"{f.name} imports {sorted(project_imports(f) & tool_layers)}"
            )


def python_files() -> list[Path]:
    """Every module of the checkout: the entry points, the library (gptlab/, model/, data/), tests/, bench/,
    tools/ (each file once: gptlab/model and gptlab/data are links to model/ and data/)."""
    files = sorted(ROOT.glob("*.py")) + sorted(LIB.glob("*.py"))
    for folder in (*(str(src(p).relative_to(ROOT)) for p in PACKAGES), "tests", "bench", "tools"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_nothing_imports_an_entry_point():
    """Tests, benchmarks and packages call the library APIs (sampling, interp.run_report, ...); a test that must
    run an entry point starts it as a subprocess or reaches its ``main`` through runpy (tests/helpers.py)."""
    offenders = []
    for f in python_files():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                if name.split(".")[0] in TOOLS or lab_name(name).startswith("data.__main__"):
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_entry_points_are_thin(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_ENTRY_POINT_LINES, (
        f"{path.relative_to(ROOT)} has {n} lines (at most {MAX_ENTRY_POINT_LINES}): move the work into a package"
    )


def module_name(path: Path) -> str:
    """The module's name as the layering speaks of it (``rundir.files`` for gptlab/rundir/files.py)."""
    parts = list(path.relative_to(LIB if LIB in path.parents else ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (every import statement: function-level ones and
    ``if TYPE_CHECKING:`` ones included; ``from a import b`` imports ``a.b`` when that is a module, else ``a``)."""
    files = {module_name(f): f for f in sorted(ROOT.glob("*.py")) if f.stem in TOOLS}
    files |= {module_name(f): f for f in sorted(LIB.glob("*.py")) if f.stem != "__init__"}
    for package in PACKAGES:
        files |= {module_name(f): f for f in sorted(src(package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {lab_name(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = lab_name(node.module or "")
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                for a in (
                    node.names
                ):  # `from pkg import sub` imports the module pkg.sub, `from pkg import name` pkg
                    full = f"{base}.{a.name}" if base else a.name
                    targets.add(full if full in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_cycle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_project_modules():
    """No module imports (even inside a function) a module that imports it back, directly or through others:
    a shared piece moves down into a module both use (interop.hf_model, sweep.columns, ...)."""
    found = cycles(module_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
