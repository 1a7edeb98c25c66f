"""The architecture, checked: the core knows nothing of Prefect, modules stay small, every on-disk name
has one owner, and no package reaches into another's private names."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = [path for folder in ("mmpipe", "flows", "deployments") for path in sorted((ROOT / folder).rglob("*.py"))]
RUN_DIR = {"mmpipe/runs/record.py"}
# The data dir's dataset.json, and (another file) the suite that checks a dataset, named after its scope.
OWNERS = {"run.json": RUN_DIR, "metrics.json": RUN_DIR, "model.keras": RUN_DIR, "report.html": RUN_DIR,
          "dataset.json": {"mmpipe/ingest/version.py", "mmpipe/contracts/suites.py"}}
MAX_LINES = 400


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield from ((node.module, alias.name) for alias in node.names)


@pytest.mark.parametrize("path", [p for p in CODE if relative(p).startswith("mmpipe/")
                                  and not relative(p).startswith("mmpipe/cli/")], ids=relative)
def test_the_core_never_imports_prefect(path):
    used = {module.split(".")[0] for module, _ in imports(path)}
    assert not used & {"prefect", "prefect_dask", "flows", "deployments"}, relative(path)


def test_no_module_is_a_god_module():
    sizes = {relative(path): len(path.read_text().splitlines()) for path in CODE}
    assert {path: lines for path, lines in sizes.items() if lines > MAX_LINES} == {}


def test_every_on_disk_name_has_one_owner():
    for path in CODE:
        text = path.read_text(encoding="utf-8")
        for name, owners in OWNERS.items():
            if relative(path) not in owners:
                assert f'"{name}"' not in text and f"'{name}'" not in text, f"{name} spelled out in {relative(path)}"


def test_no_package_imports_another_package_private_name():
    for path in CODE:
        package = relative(path).split("/")[:2]
        for module, name in imports(path):
            if name and name.startswith("_") and module.startswith("mmpipe."):
                assert module.split(".")[:2] == package, f"{relative(path)} imports {module}.{name}"
