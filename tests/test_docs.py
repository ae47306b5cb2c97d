"""The docs name real code: every `module.py`: `name` in docs/architecture.md is defined there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "visloc"


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.target.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return names


def test_architecture_table_names_existing_modules_and_functions() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    cited = re.findall(r"`([a-z_/]+\.py)`: ((?:`\w+`(?:, )?)+)", text)
    assert len(cited) >= 15
    for module, names in cited:
        path = SRC / module
        assert path.is_file(), module
        missing = set(re.findall(r"`(\w+)`", names)) - _defined(path)
        assert not missing, f"{module} does not define {sorted(missing)}"
    for module in re.findall(r"`([a-z_]+/[a-z_/]+\.py)`", text):
        assert (SRC / module).is_file() or (REPO / module).is_file(), module
