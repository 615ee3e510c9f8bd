"""Smoke test of ``benchmarks/phantom_segmenter.py`` (imported by path: benchmarks are not a package)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cwdm.errors import CwdmError
from cwdm.phantom.sets import make_phantom_set

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "phantom_segmenter.py"


@pytest.fixture(scope="module")
def seg():
    spec = importlib.util.spec_from_file_location("phantom_segmenter", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(seg, tmp_path_factory):
    """(data folder of 2 phantom cases at downsample 8, model file trained for 3 steps, train record)."""
    root = tmp_path_factory.mktemp("segmenter")
    data = root / "data"
    make_phantom_set(data, cases=2, seed=0, downsample=8, progress=False)
    record = seg.train_segmenter(data, root / "seg.pt", steps=3, seed=0, threads=1, channels=(4, 8),
                                 log_every=0)
    return data, root / "seg.pt", record


def test_region_dice_exact(seg):
    ref = np.zeros((4, 4, 4), np.int64)
    ref[0, :, 0], ref[1, :, 0], ref[2, :, 0] = 1, 2, 3
    pred = ref.copy()
    pred[2, :, 0] = 1  # enhancing called necrosis: ET lost, TC and WT kept
    d = seg.region_dice(pred, ref)
    assert d["ET"] == d["3"] == 0.0
    assert d["TC"] == d["WT"] == d["2"] == 1.0
    assert d["1"] == pytest.approx(2 * 4 / (8 + 4))
    assert seg.region_dice(ref, ref) == {k: 1.0 for k in seg.REGIONS}
    assert seg.region_dice(np.zeros_like(ref), np.zeros_like(ref))["ET"] == 1.0


def test_train_predict_dice(seg, trained, tmp_path):
    data, model, record = trained
    assert record["steps"] == 3 and record["cases"] == 2 and model.is_file()
    net, cfg = seg.load_segmenter(model)
    assert cfg["channels"] == [4, 8] and net.divisor == 2
    out = tmp_path / "segs"
    files = seg.predict_folder(model, data, out, threads=1)
    assert sorted(f.name for f in files) == sorted(f"{c.name}.nii.gz" for c in data.iterdir())
    for f in files:
        ref = nib.load(str(data / f.name[:-7] / f"{f.name[:-7]}-seg.nii.gz"))
        img = nib.load(str(f))
        assert img.shape == ref.shape == (30, 30, 20)
        assert img.get_data_dtype() == np.uint8
        assert np.allclose(img.affine, ref.affine)
        assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2, 3}
    with pytest.raises(CwdmError, match="already exists"):
        seg.predict_folder(model, data, out, threads=1)
    # the reference segs themselves score 1 everywhere
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for case in data.iterdir():
        shutil.copy(case / f"{case.name}-seg.nii.gz", perfect / f"{case.name}.nii.gz")
    scores = seg.dice_scores(perfect, data)
    assert scores["mean"] == {k: 1.0 for k in seg.REGIONS} and len(scores["cases"]) == 2
    assert set(seg.dice_scores(out, data)["mean"]) == set(seg.REGIONS)


def test_replace_reads_result_folder(seg, trained, tmp_path):
    data, model, _ = trained
    results = tmp_path / "results"
    assert seg.main(["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "x"),
                     "--replace", f"t1c={results}"]) == 1  # not a folder
    results.mkdir()
    with pytest.raises(CwdmError, match="no t1c result"):
        seg.predict_folder(model, data, tmp_path / "x", {"t1c": results})
    for case in data.iterdir():
        (results / case.name).mkdir()
        shutil.copy(case / f"{case.name}-t1n.nii.gz", results / case.name / f"{case.name}-t1c.nii.gz")
    assert seg.main(["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "segs"),
                     "--replace", f"t1c={results}", "--threads", "1"]) == 0
    assert len(list((tmp_path / "segs").glob("*.nii.gz"))) == 2
    assert seg.main(["dice", "--pred", str(tmp_path / "segs"), "--data", str(data)]) == 0
