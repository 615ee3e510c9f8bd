"""cwdm_provenance.json: how a folder of results was made; reruns never mix results silently."""

import hashlib
import json

import pytest
import torch

from cwdm import __version__
from cwdm.cli import main as cli
from cwdm.provenance import RECORD_NAME, Provenance, sha256_file
from cwdm.task import Task
from test_auto import models  # noqa: F401  (fixture)
from test_sample import FAST, make_checkpoint

CASES = ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]


def out_file(out, case, target="t2f"):
    return out / case / f"{case}-{target}.nii.gz"


def record(folder):
    return json.loads((folder / RECORD_NAME).read_text())


@pytest.fixture
def setup(make_brats_root, tmp_path):
    data = make_brats_root(cases=2)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    out = tmp_path / "out"
    base = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]
    return data, ckpt, out, base


def test_sample_writes_a_record(setup):
    data, ckpt, out, base = setup
    assert cli(base + ["--seed", "3"]) == 0
    rec = record(out)
    assert rec["format"] == "cwdm-provenance" and set(rec["cases"]) == {f"{c}/{c}-t2f.nii.gz" for c in CASES}
    (run_id, run), = rec["runs"].items()
    assert run["cwdm_version"] == __version__ and run["command"] == "sample" and run["status"] == "finished"
    assert run["device"] == "cpu" and run["started"] and run["ended"]
    assert run["settings"] == {"target": "t2f", "sampler": "ddim", "sampling_steps": 2, "eta": 0.0, "ensemble": 1,
                               "seed": 3, "clip_denoised": True, "postprocess": True, "threshold": None,
                               "ema": True, "precision": "fp32"}
    assert run["checkpoints"]["t2f"] == {"path": str(ckpt.resolve()), "step": 1, "kind": "cwdm",
                                         "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                                         "task": Task.default("t2f").to_dict()}
    for case in rec["cases"].values():
        assert case["run"] == run_id and case["target"] == "t2f" and case["seconds"] > 0


def test_rerun_with_other_settings_is_refused_in_one_line(setup, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()  # as if interrupted after the first case
    before = (out / RECORD_NAME).read_bytes()
    capsys.readouterr()
    assert cli(base + ["--sampler", "regression", "--seed", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert RECORD_NAME in err and "1 results there were made with other settings" in err
    assert "sampler ddim -> regression" in err and "seed 0 -> 5" in err and "sampling_steps 2 -> none" in err
    assert "--overwrite" in err and "--continue_anyway" in err
    assert not out_file(out, CASES[1]).exists() and (out / RECORD_NAME).read_bytes() == before
    # the same settings continue where the first run stopped
    assert cli(base) == 0 and out_file(out, CASES[1]).exists()
    assert len(record(out)["runs"]) == 2  # one per run that wrote a result


def test_another_checkpoint_is_a_difference(setup, tmp_path, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    (tmp_path / "other").mkdir()
    other = make_checkpoint(tmp_path / "other" / "t2f.pt", seed=1)
    capsys.readouterr()
    assert cli(base[:4] + [str(other)] + base[5:]) == 1
    err = capsys.readouterr().err
    assert "checkpoint for t2f t2f.pt (sha256 " in err and "2 results" in err


def test_continue_anyway_and_overwrite(setup, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()
    assert cli(base + ["--seed", "7", "--continue_anyway"]) == 0
    assert "continuing anyway" in capsys.readouterr().err
    rec = record(out)
    seeds = {rec["runs"][c["run"]]["settings"]["seed"] for c in rec["cases"].values()}
    assert seeds == {0, 7}  # the record says which run made which file
    assert cli(base + ["--seed", "9", "--overwrite"]) == 0  # redo everything: one run owns every result
    rec = record(out)
    assert len(rec["runs"]) == 1 and next(iter(rec["runs"].values()))["settings"]["seed"] == 9
    assert cli(base + ["--seed", "9"]) == 0


def test_deleted_results_do_not_count(setup):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    for case in CASES:
        out_file(out, case).unlink()
    assert cli(base + ["--sampler", "regression"]) == 0
    rec = record(out)
    assert [r["settings"]["sampler"] for r in rec["runs"].values()] == ["regression"]


def test_damaged_record_is_a_one_line_error(setup, capsys):
    data, ckpt, out, base = setup
    out.mkdir()
    (out / RECORD_NAME).write_text("{not json")
    assert cli(base) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / RECORD_NAME) in err and "unreadable provenance record" in err
    assert (out / RECORD_NAME).read_text() == "{not json" and not (out / CASES[0]).exists()


def test_auto_in_place_keeps_the_record_in_the_data_root(make_brats_root, models, capsys):  # noqa: F811
    data = make_brats_root(cases=2, missing={CASES[0]: ["t2f"], CASES[1]: ["t1c"]})
    args = ["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]
    assert cli(args) == 0
    rec = record(data)
    assert set(rec["cases"]) == {f"{CASES[0]}/{CASES[0]}-t2f.nii.gz", f"{CASES[1]}/{CASES[1]}-t1c.nii.gz"}
    (run,) = rec["runs"].values()
    assert set(run["checkpoints"]) == {"t2f", "t1c"} and run["settings"]["threshold"] == 0.04
    # an interrupted run: one case still missing; a rerun with another seed would mix
    (data / CASES[1] / f"{CASES[1]}-t1c.nii.gz").unlink()
    capsys.readouterr()
    assert cli(args + ["--seed", "1", "--overwrite"]) == 1  # in place, --overwrite cannot redo the rest
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed 0 -> 1" in err and "delete the synthesized files" in err
    assert not (data / CASES[1] / f"{CASES[1]}-t1c.nii.gz").exists()
    assert cli(args) == 0


def test_sha256_is_streamed_and_interruption_recorded(tmp_path):
    blob = tmp_path / "b.bin"
    blob.write_bytes(bytes(range(256)) * 1000)
    assert sha256_file(blob, chunk=1000) == hashlib.sha256(blob.read_bytes()).hexdigest()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.nii.gz").write_bytes(b"x")
    prov = Provenance(tmp_path, "sample", {"target": "t2f"}, {}, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt), prov.session():
        prov.case_done(tmp_path / "c" / "x.nii.gz", "t2f", 1.5)
        raise KeyboardInterrupt
    (run,) = record(tmp_path)["runs"].values()
    assert run["status"] == "interrupted" and run["ended"] and record(tmp_path)["cases"]["c/x.nii.gz"]["seconds"] == 1.5
