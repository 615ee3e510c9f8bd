"""The inpainting benchmark's non-learned baseline (benchmarks/inpainting_phantom.py): the harmonic fill."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from inpainting_phantom import harmonic_fill  # noqa: E402


def test_harmonic_fill_reproduces_a_linear_field_and_keeps_the_outside():
    x, y, z = np.meshgrid(np.arange(12), np.arange(10), np.arange(8), indexing="ij")
    field = 1.0 + x + 2.0 * y - 0.5 * z  # harmonic: the discrete Laplacian is 0
    mask = np.zeros(field.shape, bool)
    mask[3:8, 2:7, 2:6] = True
    mask[0, 0, 0] = True  # a corner voxel: fewer neighbours
    voided = np.where(mask, 0.0, field)
    filled = harmonic_fill(voided, mask)
    assert np.array_equal(filled[~mask], field[~mask])
    assert np.allclose(filled[3:8, 2:7, 2:6], field[3:8, 2:7, 2:6], atol=1e-9)


def test_harmonic_fill_is_a_mean_of_its_neighbours_and_bounded():
    rng = np.random.default_rng(0)
    vol = rng.random((9, 9, 9))
    mask = np.zeros(vol.shape, bool)
    mask[2:7, 2:7, 2:7] = True
    filled = harmonic_fill(np.where(mask, 0, vol), mask)
    inner = filled[3:6, 3:6, 3:6]
    neighbours = sum(np.roll(filled, s, axis=a) for a in range(3) for s in (-1, 1))[3:6, 3:6, 3:6] / 6
    assert np.allclose(inner, neighbours, atol=1e-9)
    assert vol[~mask].min() <= filled[mask].min() and filled[mask].max() <= vol[~mask].max()
