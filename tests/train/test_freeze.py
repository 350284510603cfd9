"""Freezing: frozen tensors come out bit-identical; plan files and regex errors."""

from __future__ import annotations

import json

import pytest
import torch

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.train.freeze import FreezePlan, load_freeze_plan, select_frozen
from spear_mm.train.loop import run_training


def test_frozen_tensors_stay_bit_identical(make_cfg, tiny_model, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("version: 1\nfreeze: ['input_layernorm']\nlayers: [-1]\nnote: test\n")
    cfg = make_cfg(
        trainer={
            "freeze": [r"embed_tokens", r"layers\.0\.mlp\."],
            "freeze_plan": str(plan),
            "save_every": 3,
            "weight_decay": 0.5,
        }
    )
    run_training(cfg)
    out = tmp_path / "run"
    with CheckpointReader(tiny_model) as base, CheckpointReader(out / "final") as final:
        assert sorted(final.names) == sorted(base.names)  # tied lm_head written once, as HF
        frozen = {
            n
            for n in base.names
            if "embed_tokens" in n
            or "layers.0.mlp." in n
            or "input_layernorm" in n
            or "layers.1." in n
        }
        assert len(frozen) == 1 + 3 + 1 + 9  # embed, layer-0 MLP + norm, all of layer 1
        for name in base.names:
            same = torch.equal(base.get(name), final.get(name))
            assert same == (name in frozen), name  # frozen: identical; trained: changed
    state = json.loads((out / "checkpoints/step-3/trainer_state.json").read_text())
    assert sorted(state["frozen"]) == sorted(frozen)


def test_checkpoints_load_with_transformers(make_cfg, tmp_path):
    from transformers import AutoModelForCausalLM

    run_training(make_cfg(trainer={"max_steps": 2}))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run/final")
    with CheckpointReader(tmp_path / "run/final") as reader:
        sd = model.state_dict()
        assert all(torch.equal(sd[n], reader.get(n)) for n in reader.names)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied


def _aliases():
    names = [
        "model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.norm.weight",
    ]
    aliases = {n: [n] for n in names}
    aliases["model.embed_tokens.weight"].append("lm_head.weight")
    return aliases


def test_select_frozen_regex_layers_and_tied_alias():
    got = select_frozen(_aliases(), FreezePlan(["^lm_head"], [-1]), num_layers=2)
    assert got == {"model.embed_tokens.weight", "model.layers.1.mlp.up_proj.weight"}


@pytest.mark.parametrize(
    "plan, message",
    [
        (FreezePlan(["nothing_matches"], []), "matches no tensor"),
        (FreezePlan(["("], []), "invalid"),
        (FreezePlan([], [2]), "out of range"),
    ],
)
def test_select_frozen_errors(plan, message):
    with pytest.raises(UserError, match=message):
        select_frozen(_aliases(), plan, num_layers=2)


def test_plan_file_formats_and_errors(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(["a", "b"]))
    assert load_freeze_plan(p) == FreezePlan(["a", "b"], [])
    p.write_text(json.dumps({"version": 1, "layers": [0, 3]}))
    assert load_freeze_plan(p) == FreezePlan([], [0, 3])
    for text, message in (
        ('{"freez": ["a"]}', "unknown key"),
        ('{"layers": ["x"]}', "integers"),
        ('{"version": 2}', "version"),
        ("[1, 2]", "regex strings"),
    ):
        p.write_text(text)
        with pytest.raises(UserError, match=message):
            load_freeze_plan(p)
    with pytest.raises(UserError, match="not found"):
        load_freeze_plan(tmp_path / "missing.yaml")


def test_non_finite_loss_stops_with_one_line_error(make_cfg, tmp_path):
    from spear_mm.testing import make_tiny_llama

    bad = make_tiny_llama(tmp_path / "nan_model", num_layers=2, seed=0)
    from safetensors.torch import load_file, save_file

    sd = load_file(bad / "model.safetensors")
    sd["model.norm.weight"][0] = float("nan")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    cfg = make_cfg(model={"name": str(bad)}, trainer={"eval_at_start": False})
    with pytest.raises(UserError, match=r"non-finite .* at step 1; .*none") as err:
        run_training(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "final").exists()


def test_missing_tracker_package_is_a_user_error(make_cfg, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(UserError, match="trainer.report_to: tensorboard is not installed"):
        run_training(make_cfg(trainer={"report_to": ["tensorboard"]}))
