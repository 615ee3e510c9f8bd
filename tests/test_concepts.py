"""One home per concept (issue 21): each name below is defined in exactly one module of cwdm.

A second definition (a copy of the modality list, a second divisor or input-channel formula, generic
file writing back in the NIfTI module, flags generated in the network core) fails here with its file.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cwdm"

HOMES = {
    "MODALITIES": "naming.py", "SEG": "naming.py", "ANY": "naming.py", "LEGACY_NAMES": "naming.py",
    "in_channels_for": "model/unet.py", "image_divisor": "model/unet.py", "model_divisor": None,
    "NetworkFlags": "model/flags.py", "given_field": "config.py",
    "atomic_write": "writes.py", "atomic_path": "writes.py", "check_destination": "writes.py",
}
"""name -> the one file (under cwdm/) that defines it; None: defined nowhere any more."""


def _definitions(name):
    """Files of cwdm that define ``name`` at any level (def, class, assignment, property)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                found.append(path.relative_to(PACKAGE).as_posix())
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                bound = [n for t in targets for n in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
                if any(isinstance(n, ast.Name) and n.id == name for n in bound):
                    found.append(path.relative_to(PACKAGE).as_posix())
    return found


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_concept_is_defined_once_in_its_home(name):
    assert _definitions(name) == ([HOMES[name]] if HOMES[name] else [])


def test_the_vocabulary_is_a_root_module_and_the_package_root_holds_only_the_version():
    import cwdm
    from cwdm import naming

    tree = ast.parse((PACKAGE / "naming.py").read_text())
    imported = [n.module for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("cwdm"))]
    assert imported == []  # naming imports nothing of cwdm: every role may import it
    assert naming.MODALITIES == ("t1n", "t1c", "t2w", "t2f") and naming.SEG == "seg" and naming.ANY == "any"
    top = ast.parse((PACKAGE / "__init__.py").read_text()).body
    defined = {t.id for n in top if isinstance(n, ast.Assign) for t in n.targets} | \
        {n.name for n in top if isinstance(n, ast.FunctionDef)}
    assert defined == {"__version__", "__getattr__"}
    assert not hasattr(cwdm, "MODALITIES") and cwdm.MissingModality.__name__ == "MissingModality"


def test_task_channels_are_the_networks_formula():
    from cwdm.model.unet import in_channels_for
    from cwdm.task import Task

    for task in (Task.default("t1c"), Task.unified(), Task.default("t2f", conditions=["t1n", "seg"],
                                                                   labels={"seg": (1, 2, 4)})):
        assert task.in_channels == in_channels_for(task.condition_channels, task.identity_channels)
    assert Task.unified().in_channels == 44 and Task.default("t1c").in_channels == 32
