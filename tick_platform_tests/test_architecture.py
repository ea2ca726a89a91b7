"""The package layering of docs/architecture.md, checked on the source and on a real process start.

Every `import` in the tree is read with `ast` (also imports inside functions, which a lazy import
would otherwise hide), and each package may only import the packages its layer allows:

    streaming.kernel  ->  (nothing of the platform)
    streaming         ->  streaming
    dashboard         ->  streaming, dashboard
    tick_platform     ->  streaming, tick_platform
    tick_tools        ->  anything (tooling on top; nothing imports it)
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.kernel.settings import PROJECT_ROOT

PLATFORM_PACKAGES = ("streaming", "dashboard", "tick_platform", "tick_tools")
KERNEL = "streaming.kernel"
ALLOWED: dict[str, tuple[str, ...]] = {
    KERNEL: (KERNEL,),
    "streaming": ("streaming",),
    "dashboard": ("streaming", "dashboard"),
    "tick_platform": ("streaming", "tick_platform"),
    "tick_tools": PLATFORM_PACKAGES,
}


def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    """`streaming/kernel/records.py` -> `streaming.kernel.records` (packages by their `__init__`)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = PROJECT_ROOT) -> list[tuple[int, str]]:
    """Every platform module `path` imports, absolute (relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] in PLATFORM_PACKAGES]


def layer_of(module: str) -> str:
    """The layer a module belongs to: the kernel, or its top-level package."""
    return KERNEL if module == KERNEL or module.startswith(KERNEL + ".") else module.split(".")[0]


def allowed(importer: str, imported: str) -> bool:
    """Whether the layering lets `importer` import `imported`."""
    return any(imported == p or imported.startswith(p + ".") for p in ALLOWED[layer_of(importer)])


def source_files() -> list[Path]:
    """Every Python file of the four packages."""
    return sorted(p for package in PLATFORM_PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py"))


def test_the_rules_themselves_catch_a_wrong_arrow() -> None:
    # The checker is only worth something if it rejects the arrows the layering forbids.
    assert not allowed("streaming.aggregate.runner", "tick_platform.partitions")
    assert not allowed("streaming.replay.engine", "tick_tools.broker.runner")
    assert not allowed("streaming.kernel.records", "streaming.aggregate.windows")
    assert not allowed("dashboard.app", "tick_platform.resources")
    assert not allowed("tick_platform.assets.facts", "tick_tools.bench.harness")
    assert allowed("streaming.kernel.topics", "streaming.kernel.settings")
    assert allowed("tick_tools.pipeline.demo", "tick_platform.backfill")


def test_every_import_follows_the_layering() -> None:
    files = source_files()
    assert len(files) > 100  # the whole tree was read, not an empty glob
    checked = 0
    wrong: list[str] = []
    for path in files:
        importer = module_name(path)
        for line, imported in imported_modules(path):
            checked += 1
            if not allowed(importer, imported):
                wrong.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {imported}")
    assert checked > 300
    assert wrong == []


def test_a_lazy_import_inside_a_function_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "streaming" / "replay" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("import os\n\ndef f() -> None:\n    from tick_platform import partitions\n"
                      "    from ..kernel import errors\n    from . import engine\n")
    found = imported_modules(module, root=tmp_path)
    assert found == [(4, "tick_platform"), (5, "streaming.kernel"), (6, "streaming.replay")]
    assert [allowed(module_name(module, tmp_path), name) for _, name in found] == [False, True, True]


@pytest.mark.parametrize("command", [["aggregate", "--help"], ["replay", "--help"]])
def test_starting_a_daemon_loads_neither_dagster_nor_tooling(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "streaming", *command],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Usage" in run.stdout
    # -X importtime writes one "import time: self | cumulative | module" line per module loaded.
    loaded = {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "streaming.kernel.settings" in loaded  # the lines were parsed: the kernel itself shows up
    forbidden = sorted(n for n in loaded if n.split(".")[0] in {"dagster", "tick_platform", "tick_tools", "streamlit"})
    assert forbidden == []
