"""The package layout's rules: which role may import which, a thin root, one address per name.

``cwdm`` is split by role (CONTRIBUTING.md, "Where a change goes"): ``model`` (the network and the
diffusion maths), ``data``, ``phantom``, ``inference``, ``training``, ``evaluation`` and
``commands`` (one module per ``cwdm`` command), over a root of shared vocabulary, errors, the CLI
and the Python API. The rules are checked on the source (ast), so a new import that breaks them
fails here with the file and line.
"""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cwdm"

SUBPACKAGES = ("model", "data", "phantom", "inference", "training", "evaluation", "commands")

ALLOWED: Dict[str, Set[str]] = {
    # role -> the roles its modules may import ("root" = the modules directly under cwdm/)
    "model": {"root", "model"},
    "data": {"root", "model", "data"},
    "phantom": {"root", "data", "phantom"},
    "inference": {"root", "model", "data", "inference"},
    "training": {"root", "model", "data", "training"},
    "evaluation": {"root", "model", "data", "evaluation"},
    "commands": {"root", *SUBPACKAGES},
}
"""Import rules between roles; every module may also import from its own role."""

ROOT_MODULES_AT_MOST = 12
ENTRY_POINTS = {"cwdm.cli", "cwdm.__main__"}
"""The only package modules that may import a command module (besides ``scripts/`` and the tests)."""
MODEL_CORE_NEVER = {"cwdm.cli", "cwdm.api", "cwdm.feedback", "cwdm.runtime"}
"""Root modules the model core must not import either (the CLI, the API and what talks to users)."""


def module_name(path: Path) -> str:
    """``cwdm/model/unet.py`` -> ``cwdm.model.unet`` (a package's ``__init__.py`` -> the package)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """``(line, imported module)`` for every cwdm import in ``source``, relative ones resolved.

    ``from X import name`` yields ``X.name`` when that is a module of cwdm, else ``X``.
    """
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cwdm")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cwdm":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if _is_module(sub) else target


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def role_of(module: str) -> str:
    """The role of a cwdm module: its subpackage, or ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else "root"


def is_command(module: str) -> bool:
    """A module that defines a ``cwdm`` command (``CONFIG`` and ``run``), not a helper beside them."""
    if role_of(module) != "commands" or module == "cwdm.commands":
        return False
    tree = ast.parse(PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py").read_text())
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return {"CONFIG", "run"} <= names


def violations(module: str, source: str, is_package: bool = False) -> List[str]:
    """Every import of ``source`` (the module ``module``) that breaks the rules, as ``line: why``."""
    out = []
    role = role_of(module)
    for line, target in imports_of(source, module, is_package):
        if role != "root" and role_of(target) not in ALLOWED[role]:
            out.append(f"{line}: {module} ({role}) imports {target} ({role_of(target)})")
        elif role == "model" and target in MODEL_CORE_NEVER:
            out.append(f"{line}: the model core ({module}) imports {target}")
        elif is_command(target) and target != module and module not in ENTRY_POINTS:
            out.append(f"{line}: {module} imports the command module {target} (only the entry points may)")
    return out


def package_modules() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_role_rules(path):
    assert violations(module_name(path), path.read_text(), path.name == "__init__.py") == []


@pytest.mark.parametrize("module, source, why", [
    ("cwdm.model.unet", "from ..commands import train\n", "imports cwdm.commands.train"),
    ("cwdm.model.samplers", "from ..commands.sample import run\n", "imports cwdm.commands.sample"),
    ("cwdm.model.diffusion", "from ..data.cases import Case\n", "(data)"),
    ("cwdm.model.unet", "import cwdm.cli\n", "the model core"),
    ("cwdm.data.datasets", "from ..inference.provenance import Provenance\n", "(inference)"),
    ("cwdm.inference.steps", "from ..commands.auto import run\n", "(commands)"),
    ("cwdm.commands.demo", "from .train import run\n", "imports the command module cwdm.commands.train"),
    ("cwdm.api", "from .commands import auto\n", "imports the command module cwdm.commands.auto"),
])
def test_a_broken_rule_is_reported_with_its_line(module, source, why):
    found = violations(module, "import os\n" + source)
    assert len(found) == 1 and found[0].startswith("2: ") and why in found[0], found


def test_entry_points_may_import_commands_and_helpers_beside_commands_are_not_commands():
    assert violations("cwdm.cli", "from .commands import train\n") == []
    assert is_command("cwdm.commands.train") and not is_command("cwdm.commands.demo_report")


def test_the_root_is_thin_and_every_module_has_a_role():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= ROOT_MODULES_AT_MOST, root
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == \
        sorted(SUBPACKAGES)
    for sub in SUBPACKAGES:  # a subpackage's __init__ documents its role and re-exports nothing
        tree = ast.parse((PACKAGE / sub / "__init__.py").read_text())
        assert ast.get_docstring(tree) and all(isinstance(n, ast.Expr) for n in tree.body), sub


def _defined(path: Path) -> Set[str]:
    """Names a module defines at its top level (functions, classes, assignments)."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _file_of(module: str) -> Optional[Path]:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else (
        path / "__init__.py" if (path / "__init__.py").is_file() else None)


LAZY = {("cwdm", "MissingModality"), ("cwdm", "Inpainting"), ("cwdm", "Insertion")}
"""Names a package provides on first use (``cwdm.__getattr__``), not by import."""


def test_every_name_is_imported_from_the_module_that_defines_it():
    """No re-exports: ``from cwdm.X import name`` only where X defines ``name`` (or X.name is a module)."""
    files = [*package_modules(), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("scripts/*.py")]
    wrong = []
    for path in files:
        inside = path.is_relative_to(PACKAGE)
        module = module_name(path) if inside else "tests.x"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                target = ".".join(here[:len(here) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            source = _file_of(target) if target.split(".")[0] == "cwdm" else None
            if source is None:
                continue
            for alias in node.names:
                if (target, alias.name) in LAZY or _is_module(f"{target}.{alias.name}"):
                    continue
                if alias.name not in _defined(source):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: {alias.name} from {target}")
    assert wrong == []
