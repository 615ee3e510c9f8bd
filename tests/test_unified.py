"""One network for any missing modality: cwdm/data/unified.py, and --contr any through train, export, sample, auto."""

import json

import pytest
import torch
from conftest import FAST

from cwdm.naming import ANY, MODALITIES
from cwdm.model.checkpoint import load_model, read_checkpoint
from cwdm.cli import main as cli
from cwdm.errors import CwdmError
from cwdm.task import Task
from cwdm.training.config import TrainConfig
from cwdm.training.state import checkpoint_files
from cwdm.data.unified import condition_input, draw_training_inputs

TINY_FLAGS = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]
SHAPE = (16, 16, 16)


def _volumes(b: int, m: int = 4) -> torch.Tensor:
    """(B, M, 4, 4, 4) volumes whose values name their slot: slot j holds j + 1."""
    return (torch.arange(m, dtype=torch.float32) + 1)[None, :, None, None, None].expand(b, m, 4, 4, 4).clone()


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("b,m", [(1, 2), (5, 4), (64, 4)])
def test_draw_training_inputs(drop, b, m):
    vols = _volumes(b, m)
    target, slots, identity = draw_training_inputs(vols, torch.Generator().manual_seed(0), drop)
    assert target.shape == (b, 1, 4, 4, 4) and slots.shape == vols.shape and identity.shape == (b, m)
    k = identity.argmax(dim=1)
    assert torch.equal(identity.sum(dim=1), torch.ones(b))
    assert torch.equal(target[:, 0, 0, 0, 0], (k + 1).float())  # the target is the slot the identity names
    kept = slots[:, :, 0, 0, 0] != 0
    assert not kept[torch.arange(b), k].any()  # the target's slot is always empty
    n_kept = kept.sum(dim=1)
    assert (n_kept >= 1).all() and (n_kept <= m - 1).all()
    if not drop:
        assert (n_kept == m - 1).all()
    elif b == 64:
        assert set(n_kept.tolist()) == set(range(1, m))  # one, two and three inputs all occur
    again = draw_training_inputs(vols, torch.Generator().manual_seed(0), drop)
    assert torch.equal(again[1], slots) and torch.equal(again[2], identity)  # reproducible from the generator


def test_condition_input_appends_constant_identity_channels():
    cond, identity = torch.rand(2, 4, 8, 8, 8), torch.eye(4)[[1, 3]]
    x = condition_input(cond, identity)
    assert x.shape == (2, 36, 4, 4, 4)
    assert torch.equal(x[:, 32:, 1, 2, 3], identity)
    assert torch.equal(condition_input(cond), x[:, :32])


def test_unified_task():
    task = Task.unified(drop_conditions=True)
    assert task.target == ANY and task.in_channels == 44 and task.targets == MODALITIES and task.is_unified
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert task.inputs_for("t1c", ["t1n", "t2f"]) == ("t1n", "t2f") and not task.is_default
    with pytest.raises(CwdmError, match="drop_conditions needs"):
        Task("t1c", Task.default("t1c").conditions, MODALITIES, True)
    with pytest.raises(CwdmError, match="--drop_conditions needs --contr any"):
        TrainConfig(contr="t1c", drop_conditions=True).task()


def _train(data, run, *extra):
    return cli(["train", "--data_dir", str(data), "--contr", "any", "--run_dir", str(run), "--num_workers", "0",
                "--progress", "False", "--tensorboard", "False", "--lr", "1e-3", *TINY_FLAGS, *extra])


@pytest.fixture(scope="module")
def unified_runs(tmp_path_factory):
    """Two tiny unified models trained 2 steps: with and without dropped conditions, exported."""
    from conftest import write_brats_root

    root = tmp_path_factory.mktemp("unified")
    data = write_brats_root(root / "data", cases=2, shape=SHAPE)
    out = {}
    for name, extra in (("drop", ["--drop_conditions", "True"]), ("plain", [])):
        assert _train(data, root / name, "--max_steps", "2", "--ema_rate", "0", *extra) == 0  # EMA: trained weights
        out[name] = root / f"{name}.pt"
        assert cli(["export", str(root / name), str(out[name])]) == 0
    return data, root, out


def test_unified_training_and_export_keep_the_task(unified_runs):
    data, root, out = unified_runs
    assert Task.from_dict(json.loads((root / "drop" / "config.json").read_text())["task"]) == Task.unified(
        drop_conditions=True)
    ckpt = checkpoint_files(root / "drop")[-1]
    assert read_checkpoint(ckpt)["model_config"]["in_channels"] == 44
    exported = read_checkpoint(out["drop"])
    assert "optimizer" not in exported and exported["step"] == 2
    loaded = load_model(out["drop"])
    assert loaded.task == Task.unified(drop_conditions=True) and loaded.config.in_channels == 44
    assert cli(["export", str(root / "drop"), str(root / "bare.pt"), "--format", "state_dict"]) == 1
    assert cli(["train", "--data_dir", str(data), "--run_dir", str(root / "x"), "--resume", str(out["drop"])]) == 1


def test_exact_resume_of_a_unified_run(make_brats_root, tmp_path):
    data = make_brats_root(cases=3, shape=SHAPE)
    assert _train(data, tmp_path / "a", "--max_steps", "4", "--drop_conditions", "True") == 0
    assert _train(data, tmp_path / "b", "--max_steps", "2", "--drop_conditions", "True") == 0
    assert _train(data, tmp_path / "b", "--max_steps", "4", "--drop_conditions", "True", "--resume", "auto") == 0
    a, b = (read_checkpoint(checkpoint_files(tmp_path / r)[-1])["model"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sample_with_a_unified_checkpoint(unified_runs, tmp_path, capsys):
    data, _, out = unified_runs
    res = tmp_path / "res"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(out["plain"]), "--contr", "t1c",
                "--output_dir", str(res), *FAST]) == 0
    assert len(list(res.glob("*/*-t1c.nii.gz"))) == 2
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(out["plain"]), "--output_dir",
                str(tmp_path / "r2"), *FAST]) == 1
    assert "a unified checkpoint synthesizes any of t1n, t1c, t2w, t2f; pass --contr" in capsys.readouterr().err


def test_auto_completes_whatever_is_missing(unified_runs, make_brats_root, tmp_path, capsys):
    _, _, out = unified_runs
    missing = {"BraTS-GLI-00000-000": ["t1n"], "BraTS-GLI-00001-000": ["t1c"], "BraTS-GLI-00002-000": ["t2w"],
               "BraTS-GLI-00003-000": ["t2f"], "BraTS-GLI-00004-000": ["t1c", "t2f"]}
    data = make_brats_root(cases=5, shape=SHAPE, missing=missing)
    # without dropped conditions: the case missing two is reported and left alone
    plain = tmp_path / "plain"
    assert cli(["auto", "--data_dir", str(data), "--output_dir", str(plain), "--model", str(out["plain"]),
                *FAST]) == 1
    err = capsys.readouterr().err
    assert "skipping BraTS-GLI-00004-000: 2 modalities missing (t1c, t2f); the unified checkpoint was trained " \
           "without --drop_conditions" in err
    assert sorted(p.name for p in plain.glob("*/*.nii.gz")) == [
        f"BraTS-GLI-0000{i}-000-{m}.nii.gz" for i, m in enumerate(["t1n", "t1c", "t2w", "t2f"])]
    # with dropped conditions: every case is completed, each file from the acquired inputs only
    done = tmp_path / "drop"
    assert cli(["auto", "--data_dir", str(data), "--output_dir", str(done), "--model", f"any={out['drop']}",
                *FAST]) == 0
    assert "completed 5 cases (6 files written" in capsys.readouterr().err
    record = json.loads((done / "cwdm_provenance.json").read_text())
    inputs = {name: entry["inputs"] for name, entry in record["cases"].items()}
    assert inputs["BraTS-GLI-00004-000/BraTS-GLI-00004-000-t1c.nii.gz"] == ["t1n", "t2w"]
    assert inputs["BraTS-GLI-00004-000/BraTS-GLI-00004-000-t2f.nii.gz"] == ["t1n", "t2w"]
    assert inputs["BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz"] == ["t1c", "t2w", "t2f"]


def test_api_with_a_unified_checkpoint(unified_runs, tmp_path):
    from cwdm.api import MissingModality

    data, _, out = unified_runs
    case = data / "BraTS-GLI-00000-000"
    files = {m: case / f"BraTS-GLI-00000-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2f")}
    api = MissingModality(models={"any": out["plain"]}, sampler="ddim", steps=2)
    written = api.infer_single(output_file=tmp_path / "x-t2w.nii.gz", **files)
    assert written.is_file()



def test_api_and_auto_write_identical_files_with_a_drop_conditions_model(unified_runs, make_brats_root, tmp_path):
    """One pipeline: MissingModality.infer_batch completes what `cwdm auto` completes, cases missing two included,
    with the same files (bit-identical volumes, headers) and the same record of inputs per file."""
    import nibabel as nib
    import numpy as np

    from cwdm.api import MissingModality

    _, _, out = unified_runs
    missing = {"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1n", "t2f"],
               "BraTS-GLI-00002-000": ["t1c", "t2w"], "BraTS-GLI-00003-000": []}
    data = make_brats_root(cases=4, shape=SHAPE, missing=missing)
    via_cli, via_api = tmp_path / "cli", tmp_path / "api"
    assert cli(["auto", "--data_dir", str(data), "--output_dir", str(via_cli), "--model", f"any={out['drop']}",
                "--seed", "7", *FAST]) == 0
    api = MissingModality(models={"any": out["drop"]}, sampler="ddim", steps=2, seed=7, device="cpu")
    written = api.infer_batch(data, via_api)

    expected = sorted(f"{case}/{case}-{m}.nii.gz" for case, mods in missing.items() for m in mods)
    files = {root: sorted(str(p.relative_to(root)) for p in root.glob("*/*.nii.gz")) for root in (via_cli, via_api)}
    assert files[via_cli] == files[via_api] == expected
    assert written == {"BraTS-GLI-00000-000": via_api / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz",
                       "BraTS-GLI-00001-000": tuple(via_api / "BraTS-GLI-00001-000" / f"BraTS-GLI-00001-000-{m}.nii.gz"
                                                    for m in ("t1n", "t2f")),
                       "BraTS-GLI-00002-000": tuple(via_api / "BraTS-GLI-00002-000" / f"BraTS-GLI-00002-000-{m}.nii.gz"
                                                    for m in ("t1c", "t2w"))}
    for rel in expected:
        a, b = nib.load(via_cli / rel), nib.load(via_api / rel)
        assert np.array_equal(a.get_fdata(), b.get_fdata()), rel
        assert a.get_fdata().std() > 0, rel  # a real synthesis, not two equal blanks
        assert np.array_equal(a.affine, b.affine) and a.header["descrip"] == b.header["descrip"], rel
    records = {root: json.loads((root / "cwdm_provenance.json").read_text()) for root in (via_cli, via_api)}
    assert _record_inputs(via_cli) == _record_inputs(via_api) == {
        f"{case}/{case}-{m}.nii.gz": [x for x in MODALITIES if x not in mods] for case, mods in missing.items()
        for m in mods}
    runs = {root: next(iter(rec["runs"].values())) for root, rec in records.items()}
    assert runs[via_cli]["command"] == "auto" and runs[via_api]["command"] == "api"
    assert runs[via_cli]["settings"] == runs[via_api]["settings"]
    assert runs[via_cli]["checkpoints"] == runs[via_api]["checkpoints"]


def test_the_api_samples_as_the_cli_by_default(unified_runs):
    """One default sampler: the API's is the commands' (the reference's ddpm with 1000 steps)."""
    from cwdm.api import MissingModality
    from cwdm.commands.auto import AutoConfig

    _, _, out = unified_runs
    api = MissingModality(models={"any": out["drop"]}, device="cpu")
    cfg = AutoConfig()
    assert (api.options.sampler, api.options.steps) == (cfg.sampler, cfg.sampling_steps) == ("ddpm", 1000)


# -- reruns after a partial completion: only acquired files are ever inputs ------------------------------------
RERUN_MISSING = {"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1n", "t2f"],
                 "BraTS-GLI-00002-000": ["t1c", "t2w"]}


def _synthesized(root):
    """relative path -> (decoded array, header descrip) of every file cwdm synthesized under ``root``."""
    import nibabel as nib

    out = {}
    for case, mods in RERUN_MISSING.items():
        for m in mods:
            img = nib.load(root / case / f"{case}-{m}.nii.gz")
            out[f"{case}/{case}-{m}.nii.gz"] = (img.get_fdata(), bytes(img.header["descrip"]).rstrip(b"\0").decode())
    return out


def _same(a, b):
    import numpy as np

    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name][0], b[name][0]), name
        assert a[name][1] == b[name][1], name


def _record_inputs(root):
    return {rel: c["inputs"] for rel, c in json.loads((root / "cwdm_provenance.json").read_text())["cases"].items()}


ACQUIRED_INPUTS = {f"{case}/{case}-{m}.nii.gz": [x for x in MODALITIES if x not in mods]
                   for case, mods in RERUN_MISSING.items() for m in mods}


def test_rerun_after_interruption_synthesizes_from_acquired_files_only(unified_runs, make_brats_root, tmp_path,
                                                                        monkeypatch, capsys):
    import shutil

    import cwdm.data.nifti_io as nifti_io
    from cwdm.data.cases import discover_cases

    _, _, out = unified_runs
    src = make_brats_root(cases=3, shape=SHAPE, missing=RERUN_MISSING)
    args = ["--model", f"any={out['drop']}", *FAST]
    whole = shutil.copytree(src, tmp_path / "whole")
    assert cli(["auto", "--data_dir", str(whole), *args]) == 0  # the uninterrupted run
    reference = _synthesized(whole)
    assert _record_inputs(whole) == ACQUIRED_INPUTS
    assert reference["BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz"][1] == "cwdm synthesized t2f from t1c,t2w"

    # killed after the first written file (and a leftover temporary file of a write in progress)
    cut = shutil.copytree(src, tmp_path / "cut")
    real, calls = nifti_io.save_nifti_like, []

    def dies_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(real(*a, **k))
        return calls[-1]

    monkeypatch.setattr(nifti_io, "save_nifti_like", dies_after_one)
    assert cli(["auto", "--data_dir", str(cut), *args]) == 130
    monkeypatch.setattr(nifti_io, "save_nifti_like", real)
    assert len(calls) == 1
    (run,) = json.loads((cut / "cwdm_provenance.json").read_text())["runs"].values()
    assert run["status"] == "interrupted"
    leftover = cut / "BraTS-GLI-00001-000" / ".BraTS-GLI-00001-000-t2f.nii.gz.x1y2.tmp.nii.gz"
    shutil.copy(calls[0], leftover)
    assert all("t2f" not in c.files for c in discover_cases(cut) if c.name == "BraTS-GLI-00001-000")
    assert cli(["auto", "--data_dir", str(cut), *args]) == 0
    _same(_synthesized(cut), reference)
    assert _record_inputs(cut) == ACQUIRED_INPUTS

    # a deleted record and a deleted second synthesized file of a case missing two: the header still tells
    for name in ("cwdm_provenance.json", "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz",
                 "BraTS-GLI-00002-000/BraTS-GLI-00002-000-t1c.nii.gz"):
        (whole / name).unlink()
    capsys.readouterr()
    assert cli(["auto", "--data_dir", str(whole), *args]) == 0
    assert "to synthesize: t2f x1 (unified), t1c x1 (unified)" in capsys.readouterr().err
    _same(_synthesized(whole), reference)
    assert _record_inputs(whole) == {k: v for k, v in ACQUIRED_INPUTS.items()
                                     if k.endswith(("00001-000-t2f.nii.gz", "00002-000-t1c.nii.gz"))}


def test_a_copied_and_edited_synthesized_file_is_still_not_acquired(unified_runs, make_brats_root, tmp_path):
    import shutil

    import nibabel as nib

    from cwdm.data.cases import discover_cases

    _, _, out = unified_runs
    data = make_brats_root(cases=2, shape=SHAPE, missing={"BraTS-GLI-00000-000": ["t1n", "t2f"],
                                                          "BraTS-GLI-00001-000": ["t1n"]})
    made = data / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz"
    assert cli(["auto", "--data_dir", str(data), "--model", f"any={out['drop']}", "--sampler", "regression",
                "--progress", "False", "--num_workers", "0"]) == 0
    img = nib.load(made)  # the user copies it into a new case, edits it and saves it with its header
    new = data / "BraTS-GLI-00009-000"
    new.mkdir()
    for m in ("t1c", "t2w", "t2f"):
        shutil.copy(data / "BraTS-GLI-00001-000" / f"BraTS-GLI-00001-000-{m}.nii.gz",
                    new / f"BraTS-GLI-00009-000-{m}.nii.gz")
    nib.save(nib.Nifti1Image(img.get_fdata() * 2 + 1, img.affine, img.header), new / "BraTS-GLI-00009-000-t1n.nii.gz")
    (data / "cwdm_provenance.json").unlink()
    cases = {c.name: c.acquired() for c in discover_cases(data)}
    assert set(cases["BraTS-GLI-00009-000"].made) == {"t1n"}
    assert set(cases["BraTS-GLI-00009-000"].files) == {"t1c", "t2w", "t2f"}
    assert set(cases["BraTS-GLI-00000-000"].made) == {"t1n", "t2f"}
    assert set(cases["BraTS-GLI-00000-000"].files) == {"t1c", "t2w"}
