"""The command line as documented: output destinations checked first, exact flags, one-line errors."""

import os

import pytest

from cwdm.cli import build_parser, main as cli, normalize_flags
from cwdm.config import from_args
from cwdm.errors import CwdmError
from cwdm.writes import check_destination
from conftest import FAST

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile.txt"
    path.write_text("not a folder")
    return path


# --- every output destination, before any work ------------------------------------------

def _commands(tmp_path, dest):
    missing_model = str(tmp_path / "no_such_model.pt")  # loading it would fail differently
    return {
        "sample": ["sample", "--data_dir", str(tmp_path), "--model_path", missing_model, "--contr", "t2f",
                   "--output_dir", str(dest), *FAST],
        "auto": ["auto", "--data_dir", str(tmp_path), "--model_t2f", missing_model, "--output_dir", str(dest), *FAST],
        "demo --out": ["demo", "--out", str(dest)],
        "demo --output_dir": ["demo", "--output_dir", str(dest)],
        "train": ["train", "--data_dir", str(tmp_path / "no_data"), "--run_dir", str(dest), "--max_steps", "1"],
        "export": ["export", missing_model, str(dest)],
    }


@pytest.mark.parametrize("command", ["sample", "auto", "demo --out", "demo --output_dir", "train"])
@pytest.mark.parametrize("where", ["is_a_file", "parent_is_a_file"])
def test_folder_destinations_checked_first(tmp_path, afile, capsys, command, where):
    dest = afile if where == "is_a_file" else afile / "sub" / "out"
    assert cli(_commands(tmp_path, dest)[command]) == 1
    err = one_line_error(capsys, str(afile))
    assert ("is a file" in err) and "no_such_model" not in err and "no_data" not in err
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("where", ["parent_is_a_file", "parent_missing", "is_a_folder", "exists"])
def test_export_destination_checked_first(tmp_path, afile, capsys, where):
    dest = {"parent_is_a_file": afile / "x.pt", "parent_missing": tmp_path / "nowhere" / "x.pt",
            "is_a_folder": tmp_path, "exists": afile}[where]
    assert cli(_commands(tmp_path, dest)["export"]) == 1
    err = one_line_error(capsys, str(dest))
    assert "no_such_model" not in err
    assert not (tmp_path / "nowhere").exists()


def test_missing_but_creatable_folder_passes_and_is_not_created(tmp_path):
    check_destination(tmp_path / "a" / "b", "--output_dir")
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_read_only_parent_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(CwdmError, match="not writable"):
            check_destination(locked / "out", "--output_dir")
        with pytest.raises(CwdmError, match="not writable"):
            check_destination(locked, "--output_dir")
        with pytest.raises(CwdmError, match="not writable"):
            check_destination(locked / "x.pt", "OUT", kind="file")
        assert cli(_commands(tmp_path, locked / "out")["sample"]) == 1
        one_line_error(capsys, "not writable")
    finally:
        locked.chmod(0o700)


# --- flags -----------------------------------------------------------------------------

def test_no_prefix_matching_and_did_you_mean(tmp_path, capsys):
    assert cli(["sample", "--num_chan", "16"]) == 2
    one_line_error(capsys, "unknown flag --num_chan", "did you mean --num_channels?")
    assert cli(["train", "--data_dri=x"]) == 2
    one_line_error(capsys, "unknown flag --data_dri", "did you mean --data_dir?")
    assert cli(["check", str(tmp_path), "--zzzzzz"]) == 2
    err = one_line_error(capsys, "unknown flag --zzzzzz")
    assert "did you mean" not in err and "usage:" not in err
    assert cli(["sample", "--sampler", "fast"]) == 2
    one_line_error(capsys, "invalid choice")


@pytest.mark.parametrize("command,extra", [("train", []), ("sample", []), ("auto", []), ("evaluate", ["--pred_dir", "p"]),
                                           ("demo", [])])
def test_dash_and_underscore_spellings(command, extra):
    parser, module = build_parser(command)
    known = [s for a in parser._actions for s in a.option_strings]
    flag = "--ref-dir" if command == "evaluate" else ("--output-dir" if command == "demo" else "--data-dir")
    args = parser.parse_args(normalize_flags(extra + [flag, "somewhere"], known))
    name = {"evaluate": "ref_dir", "demo": "out"}.get(command, "data_dir")
    assert str(getattr(from_args(module.CONFIG, args), name)) == "somewhere"


def test_dash_spelling_through_main(tmp_path, capsys):
    # the data folder is read (and found missing): the flag itself was accepted
    assert cli(["check", str(tmp_path / "nowhere"), "--header-only"]) == 1
    one_line_error(capsys, "nowhere: data folder does not exist")
    assert cli(["sample", "--data-dir", str(tmp_path / "nowhere"), "--model-path", str(tmp_path / "m.pt"),
                "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 1
    one_line_error(capsys, "m.pt: checkpoint file not found")


def test_unknown_command_suggests_the_nearest(capsys):
    assert cli(["sampel", "--data_dir", "x"]) == 2
    assert one_line_error(capsys) == "cwdm: error: unknown command 'sampel'; did you mean sample?"
    assert cli(["evalute"]) == 2
    one_line_error(capsys, "did you mean evaluate?")
    assert cli(["zzzz"]) == 2
    err = one_line_error(capsys, "unknown command 'zzzz'")
    assert "did you mean" not in err and "train, sample, auto" in err


def test_evaluate_output_dir_is_the_spelling_and_out_dir_an_alias(tmp_path, afile, capsys):
    parser, module = build_parser("evaluate")
    base = ["--pred_dir", "p", "--ref_dir", "r"]
    for flag in ("--output_dir", "--out_dir", "--output-dir", "--out-dir"):
        known = [s for a in parser._actions for s in a.option_strings]
        cfg = from_args(module.CONFIG, parser.parse_args(normalize_flags(base + [flag, "x"], known)))
        assert cfg.output_dir.name == "x"
    assert cli(["evaluate", "--pred_dir", str(tmp_path), "--ref_dir", str(tmp_path), "--output_dir", str(afile)]) == 1
    one_line_error(capsys, f"--output_dir {afile}: is a file")


def test_demo_output_dir_alias():
    parser, module = build_parser("demo")
    assert from_args(module.CONFIG, parser.parse_args(["--output_dir", "x"])).out.name == "x"
    assert from_args(module.CONFIG, parser.parse_args(["--out", "y"])).out.name == "y"


# --- destinations in /proc or /sys, and OSErrors no command turned into one line ---------------

@pytest.mark.parametrize("command", ["sample", "auto", "demo --out", "train", "export"])
@pytest.mark.parametrize("dest", ["/proc/cwdm_test_dest", "/sys/cwdm_test_dest/out"])
def test_destinations_in_proc_or_sys_are_one_line(tmp_path, capsys, command, dest):
    root = "/" + dest.split("/")[1]
    if not os.path.isdir(root):
        pytest.skip(f"no {root} here")
    assert cli(_commands(tmp_path, dest)[command]) == 1
    one_line_error(capsys, dest, "virtual file system")
    assert not os.path.exists(dest)


def test_an_oserror_escaping_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import cwdm.commands.demo

    def read_only(cfg):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "d" / "report.md"))

    monkeypatch.setattr(cwdm.commands.demo, "run", read_only)
    assert cli(["demo", "--out", str(tmp_path / "d")]) == 1
    err = one_line_error(capsys)
    assert err == f"cwdm demo: error: {tmp_path / 'd' / 'report.md'}: Read-only file system"


def test_an_oserror_of_a_copy_names_both_files(tmp_path, capsys, monkeypatch):
    import errno

    import cwdm.commands.demo

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "in.nii.gz", None, str(tmp_path / "out.nii.gz"))

    monkeypatch.setattr(cwdm.commands.demo, "run", full)
    assert cli(["demo", "--out", str(tmp_path / "d")]) == 1
    expected = f"cwdm demo: error: in.nii.gz -> {tmp_path / 'out.nii.gz'}: No space left on device"
    assert one_line_error(capsys) == expected


def test_every_command_declares_its_help_aliases_and_outputs_and_cli_only_reads_them(capsys):
    import ast
    import dataclasses
    import importlib
    from pathlib import Path

    import cwdm.cli as cli_module

    source = Path(cli_module.__file__).read_text()
    assert all(module == f"cwdm.commands.{name.replace('-', '_')}" for name, module in cli_module.COMMANDS.items())
    for name in ("EXTRA_ALIASES", "DESTINATIONS"):  # no per-command table left in the front end
        assert not hasattr(cli_module, name)
    assert cli(["--help"]) == 0
    usage = capsys.readouterr().out
    literals = {n.value for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    width = max(map(len, cli_module.COMMANDS))
    for command, module_name in cli_module.COMMANDS.items():
        module = importlib.import_module(module_name)
        assert isinstance(module.HELP, str) and module.HELP and "\n" not in module.HELP, command
        assert dataclasses.is_dataclass(module.CONFIG) and callable(module.run), command
        assert f"  {command.ljust(width)}  {module.HELP}" in usage.splitlines(), command
        assert not any(module.HELP in text for text in literals), f"cli.py repeats the help of {command}"
        names = {f.name for f in dataclasses.fields(module.CONFIG)}
        assert set(getattr(module, "ALIASES", {})) <= names, command
        for field_name, kind, *alias in module.DESTINATIONS:
            assert field_name in names and kind in ("dir", "file"), command
            assert all(a in module.ALIASES[field_name] for a in alias), command
        assert build_parser(command)[0].description == module.HELP


@pytest.mark.parametrize("command,field_name,flag", [
    ("export", "out", "OUT"), ("dropout", "dst", "DST"), ("train", "run_dir", "--run_dir"),
    ("demo", "out", "--output_dir")])
def test_the_flag_named_for_an_output_comes_from_its_field_or_declared_alias(command, field_name, flag):
    import importlib

    from cwdm.cli import COMMANDS, destination_flag

    module = importlib.import_module(COMMANDS[command])
    (entry,) = [d for d in module.DESTINATIONS if d[0] == field_name]
    assert destination_flag(module.CONFIG, *entry[:1], *entry[2:]) == flag
