import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import pytest

from cwdm.config import add_arguments, from_args, from_dict, given_field, str2bool, to_dict


@dataclass
class Demo:
    data_dir: Path = Path("data")
    lr: float = 1e-5
    channel_mult: Tuple[int, ...] = (1, 2, 2, 4, 4)
    additive_skips: bool = False
    resume: Optional[str] = None
    name: str = field(default="x", metadata={"choices": ["x", "y"]})


def parse(argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Demo, {"lr": ["learning_rate"]})
    return from_args(Demo, parser.parse_args(argv))


def test_defaults_and_types():
    cfg = parse([])
    assert cfg == Demo()
    cfg = parse(["--data_dir", "/x", "--lr", "0.1", "--channel_mult", "1", "2", "--additive_skips"])
    assert cfg.data_dir == Path("/x") and cfg.lr == 0.1 and cfg.channel_mult == (1, 2) and cfg.additive_skips


@pytest.mark.parametrize("argv,expected", [
    (["--channel_mult=1,2,4"], (1, 2, 4)),        # the reference's spelling
    (["--channel_mult", "1,2", "4"], (1, 2, 4)),
])
def test_list_spellings(argv, expected):
    assert parse(argv).channel_mult == expected


@pytest.mark.parametrize("argv,expected", [(["--additive_skips=False"], False), (["--additive_skips=True"], True),
                                           (["--no-additive_skips"], False)])
def test_bool_spellings(argv, expected):
    assert parse(argv).additive_skips is expected


def test_alias_optional_and_choices():
    assert parse(["--learning_rate", "2"]).lr == 2.0
    assert parse(["--resume", "none"]).resume is None
    assert parse(["--resume", "auto"]).resume == "auto"
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        parse(["--name", "z"])


def test_unknown_flag_is_an_error():
    with pytest.raises(SystemExit):
        parse(["--not_a_flag", "1"])  # argparse exits on unrecognized arguments


def test_bad_bool():
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")


def test_dict_round_trip():
    cfg = Demo(data_dir=Path("/a"), channel_mult=(1, 2))
    d = to_dict(cfg)
    assert d["data_dir"] == "/a" and d["channel_mult"] == [1, 2]
    assert from_dict(Demo, d) == cfg
    with pytest.raises(ValueError, match="unknown"):
        from_dict(Demo, {**d, "extra": 1}, strict=True)


@dataclass
class Typed:
    lr: float = 1e-5
    seed: int = 0
    flags_given: Optional[frozenset] = given_field()


def test_the_flags_typed_are_a_declared_field_filled_by_from_args_never_a_flag_nor_stored():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Typed)
    assert "--flags_given" not in parser.format_help() and "flags_given" not in vars(parser.parse_args([]))
    cfg = from_args(Typed, parser.parse_args(["--seed", "3"]))
    assert cfg.flags_given == frozenset({"seed"}) and cfg.seed == 3
    assert from_args(Typed, parser.parse_args([])).flags_given == frozenset()
    assert Typed().flags_given is None and cfg == Typed(seed=3)  # not compared
    assert to_dict(cfg) == {"lr": 1e-5, "seed": 3}
    assert from_dict(Typed, to_dict(cfg), strict=True).flags_given is None
    with pytest.raises(ValueError, match="flags_given"):
        from_dict(Typed, {"flags_given": ["seed"]}, strict=True)


def test_commands_that_resume_or_check_a_state_dict_declare_the_flags_typed():
    from cwdm.commands.auto import AutoConfig
    from cwdm.commands.sample import SampleConfig
    from cwdm.training.config import TrainConfig

    for cls in (TrainConfig, SampleConfig, AutoConfig):
        parser = argparse.ArgumentParser()
        add_arguments(parser, cls)
        assert from_args(cls, parser.parse_args(["--num_groups", "8"])).flags_given == frozenset({"num_groups"})


def test_network_flags_are_the_unet_config_fields():
    from dataclasses import fields

    from cwdm.training.config import ARCH_FIELDS, TrainConfig
    from cwdm.model.flags import NOT_FLAGS, NetworkFlags
    from cwdm.model.unet import UNetConfig

    flags = {f.name: (f.default, f.metadata["help"]) for f in fields(NetworkFlags)}
    config = {f.name: (f.default, f.metadata["help"]) for f in fields(UNetConfig) if f.name not in NOT_FLAGS}
    assert flags == config and "in_channels" not in flags
    assert NetworkFlags(model_channels=16, num_groups=8).unet_config(1) == UNetConfig(
        model_channels=16, num_groups=8, in_channels=16)
    assert set(ARCH_FIELDS) == {"contr", "modalities", "conditions", "label_maps", "drop_conditions", "inpainting",
                                "insertion", "insertion_margin", "prediction", "sigma_data", *flags}
    assert set(flags) <= {f.name for f in fields(TrainConfig)}


def test_unet_takes_a_config():
    from cwdm.model.unet import UNet

    with pytest.raises(TypeError, match="UNetConfig"):
        UNet(64)
