"""Options are declared once: the library checks them, the command line is built from the same declarations."""

import dataclasses

import pytest
from click.testing import CliRunner

from fredset import FredsetError
from fredset.distill.config import DistillConfig
from fredset.distill.objectives import OBJECTIVES, TMOptions
from fredset.distill.options import check, declared, flag_name
from fredset_cli.main import cli


def test_every_declared_option_is_on_the_command_line_with_its_help():
    help_text = CliRunner().invoke(cli, ["distill", "--help"], terminal_width=400).output
    fields = declared(DistillConfig) + [field for cls in OBJECTIVES.values() for field in declared(cls.Options)]
    assert {field.name for field in declared(TMOptions)} <= {field.name for field in fields}
    for field in fields:
        assert flag_name(field.name) in help_text
        assert field.metadata["help"].split(" (")[0][:30] in " ".join(help_text.split())


def test_objective_defaults_come_from_the_objectives():
    help_text = " ".join(CliRunner().invoke(cli, ["distill", "--help"], terminal_width=400).output.split())
    for name, cls in OBJECTIVES.items():
        assert f"{name}: {cls.summary}" in help_text
        assert f"{name.upper()} freq {cls.default_lr['freq']:g}" in help_text


def test_library_checks_values_against_the_declarations():
    with pytest.raises(FredsetError, match="--iterations must be >= 0"):
        check(DistillConfig(dataset="d", iterations=-1))
    with pytest.raises(FredsetError, match="--precision must be one of auto, bf16, fp32"):
        check(DistillConfig(dataset="d", precision="fp16"))
    with pytest.raises(FredsetError, match="--batch-real must be int"):
        check(DistillConfig(dataset="d", batch_real=2.5))
    with pytest.raises(FredsetError, match="--checkpoint-steps must be bool"):
        check(TMOptions(checkpoint_steps="yes"))
    check(DistillConfig(dataset="d"))  # the defaults pass
    check(TMOptions())


def test_record_is_json_able_and_names_the_objective_options():
    config = DistillConfig(dataset="d", objective="tm", options=TMOptions(buffer="b", syn_steps=3))
    record = config.record()
    assert record["options"] == {**{f.name: None for f in dataclasses.fields(TMOptions)}, "buffer": "b",
                                 "syn_steps": 3}
    assert DistillConfig(dataset="d", options={"syn_steps": 3}).record()["options"] == {"syn_steps": 3}
