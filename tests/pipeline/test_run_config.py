"""`spear-mm run` config rules: one held-out setting for every stage (with the CPT's own
training text excluded from the roles), and the replay ratios."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from spear_mm.cli.hydra_app import compose
from spear_mm.errors import UserError
from spear_mm.pipeline.config import RunConfig


def test_run_heldout_reaches_every_stage_and_excludes_the_training_text(tmp_path):
    heldout, train = tmp_path / "held.jsonl", tmp_path / "train"
    heldout.write_text('{"text": "x"}\n')
    train.mkdir()
    overrides = [f"heldout.finance={heldout}", f"data.domain={train}", f"out={tmp_path / 'r'}"]
    cfg = OmegaConf.to_object(compose("run", overrides, RunConfig))  # what the task receives
    for holder in (cfg.analyze.probe, cfg.sweep.probe, cfg.compare):
        assert holder.heldout.finance == str(heldout)
        assert holder.heldout.general == "general_heldout"
        assert holder.heldout.exclude == [str(train)]  # bundled general_train is always excluded


def test_stage_level_heldout_in_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"sweep.probe.heldout in run config: .*heldout.\{"):
        compose("run", ["sweep.probe.heldout.finance=/x.jsonl", f"out={tmp_path}"], RunConfig)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("replay=[0.0]", r"replay=\[0.0\] in run config: 0.0 is not a share"),
        ("replay=[1.5]", r"1.5 is not a share of the training tokens in \(0, 1\)"),
        ("replay=[0.1,0.1]", "a ratio repeats"),
    ],
)
def test_bad_replay_ratios_are_one_line_errors(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        compose("run", [override, f"out={tmp_path}"], RunConfig)


def test_replay_needs_general_text(tmp_path):
    with pytest.raises(UserError, match="data.general is null"):
        compose("run", ["replay=[0.1]", "data.general=null", f"out={tmp_path}"], RunConfig)
