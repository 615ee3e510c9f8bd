"""``cwdm inpaint-data``: inpainting cases in the challenge's layout from complete BraTS cases."""

import gzip
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cwdm.cli import main as cli
from cwdm.commands.inpaint_data import case_rng, make_inpainting_set
from cwdm.data.inpaint_masks import draw_healthy_mask
from cwdm.data.inpainting import HEALTHY, IMAGE, MASK, UNHEALTHY, VOIDED, discover_inpainting_cases
from cwdm.errors import CwdmError

SHAPE = (36, 36, 28)
NAMES = ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
AFFINE = np.array([[-1.0, 0, 0, 120], [0, -1.0, 0, 120], [0, 0, 1.0, -70], [0, 0, 0, 1]])
REQUIRED = (VOIDED, MASK, IMAGE, HEALTHY)


def ellipsoid(centre, radii, shape=SHAPE):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def write_case(root: Path, name: str, index: int, ext: str = ".nii.gz", t1n=True, seg=True,
               tumour_everywhere=False, scaled=False, seg_shape=SHAPE) -> Path:
    """A complete case: int16 t1n (an ellipsoid brain, 0 outside), t2f, and a uint8 seg (labels 1, 2)."""
    rng = np.random.default_rng(100 + index)
    folder = root / name
    folder.mkdir(parents=True)
    brain = ellipsoid(np.array(SHAPE) / 2, np.array(SHAPE) * 0.42)
    tumour = ellipsoid(np.array(SHAPE) * [0.6 - 0.05 * index, 0.45, 0.5], (5, 6, 4)) & brain
    if tumour_everywhere:
        tumour = brain.copy()
    image = np.where(brain, rng.integers(200, 900, size=SHAPE), 0).astype(np.int16)
    if t1n:
        img = nib.Nifti1Image(image, AFFINE)
        if scaled:
            img.header.set_slope_inter(0.5, 10.0)
        nib.save(img, str(folder / f"{name}-t1n{ext}"))
    nib.save(nib.Nifti1Image((image // 2).astype(np.int16), AFFINE), str(folder / f"{name}-t2f{ext}"))
    if seg:
        labels = np.where(tumour, 2, 0).astype(np.uint8)
        labels[tumour & ellipsoid(np.array(SHAPE) * [0.6 - 0.05 * index, 0.45, 0.5], (2, 2, 2))] = 1
        if seg_shape != SHAPE:
            labels = np.zeros(seg_shape, np.uint8)
        nib.save(nib.Nifti1Image(labels, AFFINE), str(folder / f"{name}-seg{ext}"))
    return folder


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    for i, name in enumerate(NAMES):
        write_case(root, name, i)
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def run(data: Path, out: Path, *flags) -> int:
    return cli(["inpaint-data", "--data_dir", str(data), "--output_dir", str(out), *flags])


def test_cases_are_written_in_the_challenge_layout_and_read_back(data, tmp_path, capsys):
    before = snapshot(data)
    out = tmp_path / "out"
    assert run(data, out, "--seed", "4", "--margin", "2") == 0
    assert "wrote 3 inpainting case(s)" in capsys.readouterr().out
    assert snapshot(data) == before, "the input was modified"
    cases = discover_inpainting_cases(out, required=REQUIRED + (UNHEALTHY,))
    assert [c.name for c in cases] == NAMES
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary folder was left"
    for case in cases:
        src = data / case.name
        t1n = read(src / f"{case.name}-t1n.nii.gz")
        seg = read(src / f"{case.name}-seg.nii.gz")
        voided_img = nib.load(str(case.path(VOIDED)))
        voided, mask = np.asanyarray(voided_img.dataobj), read(case.path(MASK))
        assert voided.dtype == np.int16 and np.allclose(voided_img.affine, AFFINE)
        assert voided_img.header.get_zooms() == nib.load(str(src / f"{case.name}-t1n.nii.gz")).header.get_zooms()
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        inside = mask == 1
        np.testing.assert_array_equal(voided[~inside], t1n[~inside])
        assert (voided[inside] == 0).all() and (t1n[inside] != 0).all(), "the mask must void brain tissue"
        np.testing.assert_array_equal(read(case.path(HEALTHY)), mask)
        np.testing.assert_array_equal(read(case.path(UNHEALTHY)), (seg > 0).astype(np.uint8))
        assert ndimage.distance_transform_edt(seg == 0)[inside].min() > 2, "the mask is within the margin"
        assert ndimage.label(inside)[1] == 1
        fraction = inside.sum() / (t1n != 0).sum()
        assert 0.005 - 1e-3 <= fraction <= 0.05 + 1e-3
        assert case.path(IMAGE).read_bytes() == (src / f"{case.name}-t1n.nii.gz").read_bytes()
        # the mask is the one the case's own generator draws
        expected = draw_healthy_mask(t1n != 0, seg > 0, case_rng(4, case.name), margin=2)
        np.testing.assert_array_equal(inside, expected)


def test_same_seed_same_bytes_other_seed_other_masks(data, tmp_path):
    for out, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert run(data, tmp_path / out, "--seed", seed) == 0
    for name in NAMES:
        for part in (MASK, VOIDED, UNHEALTHY):
            file = f"{name}/{name}-{part}.nii.gz"
            assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
        mask = f"{name}/{name}-{MASK}.nii.gz"
        assert not np.array_equal(read(tmp_path / "a" / mask), read(tmp_path / "c" / mask))
    masks = [read(tmp_path / "a" / n / f"{n}-{MASK}.nii.gz") for n in NAMES]
    assert not np.array_equal(masks[0], masks[1])  # each case draws its own


def test_a_case_mask_does_not_depend_on_the_other_cases(data, tmp_path):
    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer)
    shutil.rmtree(fewer / NAMES[0])
    assert run(data, tmp_path / "all", "--seed", "7") == 0
    assert run(fewer, tmp_path / "two", "--seed", "7") == 0
    for name in NAMES[1:]:
        file = f"{name}/{name}-{MASK}.nii.gz"
        assert (tmp_path / "all" / file).read_bytes() == (tmp_path / "two" / file).read_bytes()


def test_size_range_is_a_list_of_two_fractions(data, tmp_path):
    assert run(data, tmp_path / "out", "--size_range", "0.02", "0.03", "--margin", "0") == 0
    for name in NAMES:
        mask = read(tmp_path / "out" / name / f"{name}-{MASK}.nii.gz")
        brain = read(data / name / f"{name}-t1n.nii.gz") != 0
        assert 0.02 * brain.sum() - 0.5 <= mask.sum() <= 0.03 * brain.sum() + 0.5


@pytest.mark.parametrize("flags,word", [(["--size_range", "0.1"], "--size_range"),
                                        (["--size_range", "0.2", "0.1"], "--size_range"),
                                        (["--margin", "-1"], "--margin"), (["--seed", "-3"], "--seed")])
def test_bad_options_are_one_line(data, tmp_path, capsys, flags, word):
    assert run(data, tmp_path / "out", *flags) == 1
    err = capsys.readouterr().err.strip()
    assert word in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("broken", ["seg", "t1n", "shape"])
def test_an_unusable_case_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, capsys, broken):
    data = tmp_path / "data"
    write_case(data, NAMES[0], 0)
    write_case(data, NAMES[1], 1, seg=broken != "seg", t1n=broken != "t1n",
               seg_shape=(36, 36, 27) if broken == "shape" else SHAPE)
    assert run(data, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    part = "t1n" if broken == "t1n" else "seg"
    assert str(data / NAMES[1] / f"{NAMES[1]}-{part}.nii.gz") in err
    assert ("missing" in err) if broken != "shape" else ("shape" in err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_output_overlapping_the_input_is_refused(data, tmp_path, capsys, where):
    before = snapshot(data)
    out = {"equal": data, "inside": data / "inpainting", "contains": tmp_path}[where]
    assert run(data, out) == 1
    err = capsys.readouterr().err.strip()
    assert "--output_dir" in err and "\n" not in err
    assert snapshot(data) == before and not (data / "inpainting").exists()


def test_existing_outputs_need_overwrite_and_other_files_stay(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(data, out, "--seed", "1") == 0
    mask = out / NAMES[0] / f"{NAMES[0]}-{MASK}.nii.gz"
    result = out / NAMES[0] / f"{NAMES[0]}-t1n-inference.nii.gz"
    result.write_bytes(b"a result")
    first, outputs = mask.read_bytes(), snapshot(out)
    capsys.readouterr()
    assert run(data, out, "--seed", "2") == 1
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and "\n" not in err
    assert snapshot(out) == outputs
    assert run(data, out, "--seed", "2", "--overwrite") == 0
    assert not np.array_equal(read(mask), np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(first)).dataobj))
    assert result.read_bytes() == b"a result"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_no_site_for_a_mask_names_the_case_and_earlier_cases_are_complete(tmp_path, capsys):
    data = tmp_path / "data"
    write_case(data, NAMES[0], 0)
    write_case(data, NAMES[1], 1, tumour_everywhere=True)
    out = tmp_path / "out"
    assert run(data, out) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("cwdm inpaint-data: error: ")
    assert str(data / NAMES[1] / f"{NAMES[1]}-t1n.nii.gz") in err and "no healthy tissue" in err
    assert [p.name for p in out.iterdir()] == [NAMES[0]]  # no half-written case, no temporary folder
    assert len(discover_inpainting_cases(out, required=REQUIRED)) == 1


def test_plain_nii_and_scaled_t1n(tmp_path):
    data = tmp_path / "data"
    write_case(data, NAMES[0], 0, ext=".nii")
    write_case(data, NAMES[1], 1, scaled=True)
    out = tmp_path / "out"
    fractions = make_inpainting_set(data, out, seed=3)
    assert list(fractions) == NAMES[:2] and all(0.004 < f < 0.051 for f in fractions.values())
    (plain, scaled) = discover_inpainting_cases(out, required=REQUIRED)
    # a .nii input is gzipped: the same image under the layout's .nii.gz name
    np.testing.assert_array_equal(read(plain.path(IMAGE)), read(data / NAMES[0] / f"{NAMES[0]}-t1n.nii"))
    # a scaled t1n is voided in float32, with its scaled values
    t1n = nib.load(str(data / NAMES[1] / f"{NAMES[1]}-t1n.nii.gz")).get_fdata()
    voided_img = nib.load(str(scaled.path(VOIDED)))
    assert voided_img.get_data_dtype() == np.float32
    voided, mask = voided_img.get_fdata(), read(scaled.path(MASK)) == 1
    np.testing.assert_allclose(voided[~mask], t1n[~mask])
    assert (voided[mask] == 0).all()
    with pytest.raises(CwdmError, match="already exists"):
        make_inpainting_set(data, out, seed=3)
