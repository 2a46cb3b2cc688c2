"""Every import in src/classzoo runs down the layers of docs/architecture.md, never up.

Each module is parsed with ``ast`` (nothing is imported), so an import inside a function counts
as much as one at the top of the file; a module that belongs to no layer fails too, so a new
file has to be placed before it can pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "classzoo"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# docs/architecture.md "Layers", lowest first: a module imports from its own layer or below.
# Keys are the first name under classzoo/: a package (engine) or a module's stem (export).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("errors / formats / config", frozenset({"errors", "formats", "config", "config_yaml"})),
    ("data / models", frozenset({"data", "models"})),
    ("engine", frozenset({"engine"})),
    (
        "verbs",
        frozenset(
            {
                "cli",
                "references",
                "quickstart",
                "predict",
                "export",
                "bench",
                "convert_slim",
                "report",
                "report_plots",
                # the package itself: `import classzoo` runs __init__, which imports the engine
                "__init__",
                "__main__",
            }
        ),
    ),
)
RANK = {key: rank for rank, (_, keys) in enumerate(LAYERS) for key in keys}


def _key(parts: list[str]) -> str:
    """Layer key of a module given as its names under classzoo/ (``[]`` is the package)."""
    if not parts:
        return "__init__"
    return parts[0]


def _module_parts(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _targets(node: ast.AST, package: list[str]) -> list[list[str]]:
    """The classzoo modules an import node names, as names under classzoo/."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".") for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: climb from this module's package
            base = ["classzoo", *package][: len(package) + 2 - node.level]
            names = [base + (node.module.split(".") if node.module else [])]
        else:
            names = [node.module.split(".")]
        if names[0] == ["classzoo"]:  # `from classzoo import x`: x a module, else the package
            names = [["classzoo", a.name] if _exists(a.name) else ["classzoo"] for a in node.names]
    elif (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        names = [node.args[0].value.split(".")]
    else:
        return []
    return [n[1:] for n in names if n[0] == "classzoo"]


def _exists(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def violations(path: Path, source: str) -> list[str]:
    """``file:line: ...`` for each import of ``source`` (the text of ``path``) that runs up."""
    parts = _module_parts(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    here = _key(parts)
    rel = path.relative_to(ROOT)
    if here not in RANK:
        return [f"{rel}: '{here}' is in no layer of docs/architecture.md (add it to LAYERS)"]
    out = []
    for node in ast.walk(ast.parse(source, str(path))):
        for target in _targets(node, package):
            there, name = _key(target), ".".join(["classzoo", *target])
            if there not in RANK:
                out.append(f"{rel}:{node.lineno}: imports {name}, which is in no layer")
            elif RANK[there] > RANK[here]:
                out.append(
                    f"{rel}:{node.lineno}: {LAYERS[RANK[here]][0]} imports {name} "
                    f"({LAYERS[RANK[there]][0]}), a layer above"
                )
    return out


def test_no_import_runs_up_a_layer():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50  # the walk found the package
    found = [v for path in modules for v in violations(path, path.read_text(encoding="utf-8"))]
    assert not found, "imports against the layering:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("where", "line", "bad"),
    [
        ("models/weights.py", "from classzoo.convert_slim import convert_slim", True),
        ("models/weights.py", "from ..engine import checkpoint", True),
        ("formats/crc.py", "import classzoo.data.decode", True),
        ("formats/crc.py", "from classzoo import UserError", True),  # runs __init__ (engine)
        ("data/decode.py", "importlib.import_module('classzoo.engine.run')", True),
        ("models/weights.py", "from classzoo.newthing import x", True),  # placed nowhere
        ("engine/run.py", "from classzoo.models import registry", False),
        ("cli/convert.py", "from classzoo.convert_slim import convert_slim", False),
        ("models/slim_heads.py", "from .slim_names import default_scope", False),
        ("data/decode.py", "from classzoo import errors", False),
    ],
)
def test_the_check_sees_an_upward_import(where, line, bad):
    """The checker itself, on a line written into a module: inside a function counts too."""
    source = f"def f():\n    {line}\n"
    found = violations(PACKAGE / where, source)
    assert bool(found) is bad, found
    if bad:
        assert f"src/classzoo/{where}:2:" in found[0]


def test_every_layer_name_is_in_the_architecture_diagram():
    """The table above is the diagram's: each module it places is named in the Layers block."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    diagram = text.split("## Layers", 1)[1].split("## Data flow", 1)[0]
    for _, keys in LAYERS:
        for key in keys - {"__init__", "__main__"}:
            shown = f"{key}/" if (PACKAGE / key).is_dir() else f"{key}.py"
            assert shown in diagram, f"docs/architecture.md Layers does not show {shown}"
