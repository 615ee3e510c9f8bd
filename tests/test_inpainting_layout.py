"""The inpainting challenge's layout (cwdm.data.inpainting): parts matched on whole names, results named
as the challenge collects them, and a synthesis folder reader that does not take the parts for modalities."""

import re
from pathlib import Path

import pytest

from cwdm.data.cases import discover_cases
from cwdm.data.inpainting import (HEALTHY, IMAGE, MASK, RESULT, UNHEALTHY, VOIDED, discover_inpainting_cases,
                                  is_inpainting_folder, result_path, split_name)
from cwdm.errors import CwdmError


def _case(root: Path, name: str, parts) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for part in parts:
        (folder / f"{name}-{part}.nii.gz").write_bytes(b"")
    return folder


@pytest.mark.parametrize("name, expected", [
    ("BraTS-GLI-00001-000-t1n-voided.nii.gz", ("BraTS-GLI-00001-000", VOIDED)),
    ("BraTS-GLI-00001-000-mask-healthy.nii.gz", ("BraTS-GLI-00001-000", HEALTHY)),
    ("BraTS-GLI-00001-000-mask-unhealthy.nii", ("BraTS-GLI-00001-000", UNHEALTHY)),
    ("BraTS-GLI-00001-000-mask.nii.gz", ("BraTS-GLI-00001-000", MASK)),
    ("BraTS-GLI-00001-000-t1n.nii.gz", ("BraTS-GLI-00001-000", IMAGE)),
    ("BraTS-GLI-00001-000-t1n-inference.nii.gz", ("BraTS-GLI-00001-000", RESULT)),
    ("BraTS-GLI-00001-000-t2f.nii.gz", ("BraTS-GLI-00001-000-t2f", None)),
    ("t1n-voided.nii.gz", ("t1n-voided", None)),  # a part with no case name before it
])
def test_parts_are_matched_on_whole_names_longest_first(name, expected):
    assert split_name(name) == expected


def test_training_and_test_cases_are_read_and_results_named(tmp_path):
    _case(tmp_path, "B-1", [VOIDED, MASK, IMAGE, HEALTHY, UNHEALTHY])
    _case(tmp_path, "B-2", [VOIDED, MASK])
    (tmp_path / "notes").mkdir()
    cases = discover_inpainting_cases(tmp_path)
    assert [c.name for c in cases] == ["B-1", "B-2"]
    assert set(cases[0].files) == {VOIDED, MASK, IMAGE, HEALTHY, UNHEALTHY}
    assert cases[1].missing([IMAGE, HEALTHY]) == [IMAGE, HEALTHY]
    assert result_path(cases[1]) == tmp_path / "B-2" / "B-2-t1n-inference.nii.gz"
    assert result_path(cases[1], tmp_path / "out") == tmp_path / "out" / "B-2-t1n-inference.nii.gz"
    # one case folder given directly
    assert [c.name for c in discover_inpainting_cases(tmp_path / "B-2")] == ["B-2"]
    assert is_inpainting_folder(tmp_path) and is_inpainting_folder(tmp_path / "B-1")


def test_a_synthesis_reader_does_not_take_the_parts_for_modalities(tmp_path):
    _case(tmp_path, "B-1", [VOIDED, MASK, HEALTHY, UNHEALTHY, RESULT])
    (case,) = discover_cases(tmp_path)
    assert case.files == {} and len(case.others) == 5
    assert not is_inpainting_folder(_case(tmp_path / "synth", "S-1", ["t1n", "t1c", "t2w", "t2f"]).parent)


@pytest.mark.parametrize("parts, message", [
    ([VOIDED], "B-1/B-1-mask.nii.gz: missing (mask is needed)"),
    ([MASK], "B-1/B-1-t1n-voided.nii.gz: missing (t1n-voided is needed)"),
])
def test_a_case_without_its_inputs_is_one_line_naming_the_file(tmp_path, parts, message):
    _case(tmp_path, "B-1", parts)
    with pytest.raises(CwdmError, match=re.escape(message)):
        discover_inpainting_cases(tmp_path)


def test_duplicates_and_mixed_case_names_are_problems(tmp_path):
    folder = _case(tmp_path, "B-1", [VOIDED, MASK])
    (folder / "B-1-mask.nii").write_bytes(b"")
    with pytest.raises(CwdmError, match="a second mask file"):
        discover_inpainting_cases(tmp_path)
    (folder / "B-1-mask.nii").unlink()
    (folder / "C-9-mask-healthy.nii.gz").write_bytes(b"")
    with pytest.raises(CwdmError, match="case name 'C-9' differs"):
        discover_inpainting_cases(tmp_path)


def test_empty_or_missing_roots_are_one_line(tmp_path):
    with pytest.raises(CwdmError, match="no inpainting cases found"):
        discover_inpainting_cases(tmp_path)
    with pytest.raises(CwdmError, match="does not exist"):
        discover_inpainting_cases(tmp_path / "nope")
