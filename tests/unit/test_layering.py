"""The simulator is kept apart from the pipeline: no pipeline module imports `firehose.simulator`.

`firehose.cli` loads `firehose.simulator.command` by name (importlib) only for `firehose simulate`; every other
import of the simulator outside its own package is a layering error. The check parses the source (ast), so it sees
imports inside functions too, and fails on one that a test run would never execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import firehose

PACKAGE = Path(firehose.__file__).parent
SIMULATOR = PACKAGE / "simulator"


def simulator_imports(source: str, module: str) -> list[str]:
    """The imports in `source` (the code of dotted `module`) that load `firehose.simulator` or one of its modules."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(t == "firehose.simulator" or t.startswith("firehose.simulator.") for t in targets):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def pipeline_modules() -> list[Path]:
    """Every Python file of the firehose package outside the simulator."""
    return sorted(p for p in PACKAGE.rglob("*.py") if SIMULATOR not in p.parents)


def test_the_pipeline_never_imports_the_simulator() -> None:
    modules = pipeline_modules()
    names = {p.stem for p in modules}
    stages = {"ingest", "buffer", "flush", "storage", "schema", "search", "catalog", "params", "api", "cli", "config"}
    assert stages <= names
    offenders = {}
    for path in modules:
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found = simulator_imports(path.read_text(encoding="utf-8"), dotted)
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert not offenders, (
        f"pipeline modules import the simulator: {offenders}; the pipeline must not depend on it "
        "(move the shared code out of firehose.simulator, or load it lazily by name as firehose.cli does)")


@pytest.mark.parametrize("source", [
    "import firehose.simulator",
    "import firehose.simulator.generator as g",
    "from firehose.simulator import generator",
    "from firehose.simulator.clock import parse_time",
    "from firehose import simulator",
    "from . import simulator",
    "from .simulator.mix import MIX",
    "def f():\n    from firehose.simulator.server import Simulator\n",
])
def test_the_check_sees_every_form_of_import(source: str) -> None:
    assert simulator_imports(source, "firehose.flush")


@pytest.mark.parametrize("source", [
    "import firehose.schema",
    "from firehose import config, schema",
    "from . import simulation_notes",
    "import importlib\nimportlib.import_module('firehose.simulator.command')",
])
def test_the_check_leaves_other_imports_alone(source: str) -> None:
    assert not simulator_imports(source, "firehose.flush")


def test_the_simulator_package_exists_and_is_split() -> None:
    files = sorted(SIMULATOR.glob("*.py"))
    assert len(files) > 5
    for path in files:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 500, f"{path.name} has {lines} lines; split it by job"
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path.name} needs a docstring"


def test_the_wheel_lists_every_package() -> None:
    """`[tool.setuptools] packages` is explicit: a subpackage missing from it is missing from the installed app."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert "firehose.simulator" in on_disk
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in app/pyproject.toml"
