"""The floor plan (DESIGN.md, Layout): read every module's imports, those inside functions too, and hold the rule.

- the core (`twin/` less `twin/cli/`) imports nothing of training, serving or bot;
- training and serving import the core, never each other or bot;
- bot imports serving and the core;
- only `twin/cli/` imports upward; and `twin --help` imports no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("twin", "training", "serving", "bot")
MAY_IMPORT = {
    "core": {"core"},
    "training": {"core", "training"},
    "serving": {"core", "serving"},
    "bot": {"core", "serving", "bot"},
    "cli": {"core", "training", "serving", "bot", "cli"},
}


def floor(module: str) -> str:
    """The floor a module stands on: `floor("twin.cli.relay")` -> 'cli', `floor("twin.store")` -> 'core'."""
    top = module.split(".")[0]
    if module == "twin.cli" or module.startswith("twin.cli."):
        return "cli"
    return "core" if top == "twin" else top


def modules() -> dict[str, Path]:
    found = {}
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module of ours that `path` imports, anywhere in it (functions, TYPE_CHECKING blocks), with lines."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package up
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] in OURS]


def test_every_import_points_down_the_floor_plan():
    found = modules()
    assert {"twin.store", "training.trainer", "serving.drafting", "bot.relay", "twin.cli.relay"} <= set(found)
    wrong = [f"{module} ({floor(module)}) imports {name} ({floor(name)}), line {line}"
             for module, path in found.items() for name, line in imports(path, module)
             if floor(name) not in MAY_IMPORT[floor(module)]]
    assert wrong == []


def test_no_two_modules_import_each_other():
    found = modules()
    edges = {m: {n for n, _ in imports(p, m) if n in found and n != m} for m, p in found.items()}
    circles = sorted({tuple(sorted((a, b))) for a, out in edges.items() for b in out if a in edges.get(b, ())})
    assert circles == []


def test_the_rule_reads_the_imports_it_must():
    assert floor("twin.cli") == floor("twin.cli.relay") == "cli" and floor("twin.clifford") == "core"
    tree = ROOT / "tests" / "_layout_probe.py"
    tree.write_text("def f():\n    from bot import relay\n    import training.trainer\n")
    try:
        assert [n for n, _ in imports(tree, "twin.probe")] == ["bot", "training.trainer"]
    finally:
        tree.unlink()


def test_help_imports_no_model_stack():
    code = ("import sys; from twin.cli import main; "
            "assert not {'torch', 'transformers', 'peft', 'telegram', 'discord'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
