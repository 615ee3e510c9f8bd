"""Checks of ``benchmarks/student_map.py``'s comparison of a student's deviations with its teacher's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def sm():
    spec = importlib.util.spec_from_file_location("student_map", BENCH / "student_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def teacher():
    return torch.randn((6, 5, 4, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_shrunk_copy(sm, teacher, scale):
    # the same deviations scaled, around another mean: same direction, amplitude = scale
    student = 3.0 + scale * (teacher - teacher.mean(0))
    r = sm.compare(teacher, student, torch.ones(5, 4, 3, dtype=torch.bool))
    assert r["corr"] == pytest.approx(1.0)
    assert r["amplitude"] == pytest.approx(scale)
    assert r["R2"] == pytest.approx(1 - (1 - scale) ** 2)


def test_ignores_noise_and_masks(sm, teacher):
    mask = torch.zeros(5, 4, 3, dtype=torch.bool)
    mask[:2] = True
    student = teacher.clone()
    student[:, 2:] = 0.0                                   # outside the mask: not looked at
    r = sm.compare(teacher, student, mask)
    assert r == pytest.approx({"corr": 1.0, "amplitude": 1.0, "R2": 1.0})
    # a student that ignores its noise: every member the same
    r = sm.compare(teacher, teacher.mean(0).expand_as(teacher), mask)
    assert r["R2"] == pytest.approx(0.0) and r["amplitude"] == pytest.approx(0.0, abs=1e-12)
