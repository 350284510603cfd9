"""Untrusted files: no code runs from a checkpoint or a recipe, and names read from an index
cannot reach outside their folder.

Every "would run code" payload below creates a marker file when (and only when) it runs, so the
tests check the marker, not just the error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.merge.executor import run_merge
from spear_mm.merge.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2] / "spear_mm"


class _CreatesFileWhenUnpickled:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_folder(src: Path, dst: Path, extra=None) -> Path:
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    if extra is not None:
        state["evil"] = extra
    torch.save(state, dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


def test_malicious_pickle_runs_nothing_with_or_without_opt_in(tmp_path, small_pair, rel, cli_env):
    base, adapted = small_pair
    marker = tmp_path / "pwned"
    evil = _pickle_folder(base, tmp_path / "evil", _CreatesFileWhenUnpickled(marker))
    with pytest.raises(UserError, match="pickle checkpoint .*--allow-pickle"):
        CheckpointReader(evil)
    with pytest.raises(UserError, match="weights_only=True"):
        CheckpointReader(evil, allow_pickle=True)
    assert not marker.exists()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": str(evil), "adapted": str(adapted)}))
    for flags in ([], ["--allow-pickle"]):
        proc = rel.run_cli(cli_env, "merge", recipe, "--out", tmp_path / "out", *flags)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = rel.run_cli(
        cli_env, "train", f"model.name={evil}", "model.allow_pickle=true", f"out={tmp_path / 't'}"
    )
    assert proc.returncode == 2 and "weights_only=True" in proc.stderr, proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "t").exists()


def test_plain_pickle_loads_with_opt_in(tmp_path, small_pair):
    """The control: opt-in does load a pickle that holds only tensors."""
    base, _ = small_pair
    plain = _pickle_folder(base, tmp_path / "plain")
    with CheckpointReader(plain, allow_pickle=True) as reader:
        want = load_file(base / "model.safetensors")
        assert sorted(reader.names) == sorted(want)
        assert all(torch.equal(reader.get(n), want[n]) for n in want)


def _remote_code_folder(src: Path, dst: Path, marker: Path) -> Path:
    """A model folder whose config asks for its own Python (auto_map), which writes `marker`."""
    shutil.copytree(src, dst)
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    (dst / "configuration_evil.py").write_text(
        payload
        + "from transformers import LlamaConfig\n"
        + "class EvilConfig(LlamaConfig):\n    model_type = 'llama'\n"
    )
    (dst / "modeling_evil.py").write_text(
        payload
        + "from transformers import LlamaForCausalLM\n"
        + "from .configuration_evil import EvilConfig\n"
        + "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_remote_code_in_a_checkpoint_is_not_executed_by_default(tmp_path, small_pair, cli_env):
    base, _ = small_pair
    marker = tmp_path / "ran"
    folder = _remote_code_folder(base, tmp_path / "remote", marker)
    # In a fresh interpreter, so no module of the folder can linger in this one. The second load
    # opts in: the control that shows the payload is live.
    script = (
        "import pathlib\n"
        "from spear_mm.io.sources import load_model\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "for trust in (False, True):\n"
        "    try:\n"
        f"        name = type(load_model({str(folder)!r}, trust_remote_code=trust)[0]).__name__\n"
        "    except Exception as exc:\n"
        "        name = 'refused ' + type(exc).__name__\n"
        "    print(f'{trust}|{name}|{marker.exists()}')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=cli_env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    default, trusted = proc.stdout.strip().splitlines()[-2:]
    assert default.split("|")[2] == "False", "the checkpoint's own Python ran by default"
    assert "EvilModel" not in default, default
    assert trusted == "True|EvilModel|True", trusted  # opting in does run it: the test is live
    from spear_mm.train.config import ModelConfig

    assert ModelConfig().trust_remote_code is False
    for conf in (ROOT / "conf" / "model").glob("*.yaml"):
        assert yaml.safe_load(conf.read_text()).get("trust_remote_code", False) is False, conf


def test_yaml_tags_never_construct_objects(tmp_path):
    marker = tmp_path / "pwned"
    for tag in ("!!python/object/apply:builtins.open", "!!python/object/new:builtins.open"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"{tag} [{str(marker)!r}, 'w']\n")
        with pytest.raises(UserError, match="not valid YAML"):
            load_recipe(recipe)
    recipe.write_text("base: !!python/name:os.system\nadapted: x\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(recipe)
    assert not marker.exists()


@pytest.mark.parametrize(
    "data, key",
    [
        ({"_target_": "builtins.open", "base": "a", "adapted": "b"}, "_target_"),
        ({"base": "a", "adapted": "b", "rules": [{"_target_": "os.system", "t": 0.5}]},
         "rules[0]._target_"),
        ({"merge_method": "slerp", "base_model": "a", "_target_": "os.system",
          "models": [{"model": "a"}, {"model": "b"}]}, "_target_"),
    ],
)  # fmt: skip
def test_target_keys_in_recipes_are_refused_not_instantiated(data, key):
    with pytest.raises(UserError, match=re.escape(f"key '{key}': unknown key")):
        recipe_from_dict(data)


def test_mergekit_parameter_object_is_not_instantiated(tmp_path, small_pair):
    base, adapted = small_pair
    data = {
        "merge_method": "slerp",
        "base_model": str(base),
        "models": [{"model": str(base)}, {"model": str(adapted)}],
        "parameters": {"t": {"_target_": "builtins.open", "_args_": [str(tmp_path / "p"), "w"]}},
    }
    with pytest.raises(UserError, match="value"):
        run_merge(recipe_from_dict(data), tmp_path / "out", progress=False)
    assert not (tmp_path / "p").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors"])
def test_index_shard_names_cannot_leave_the_folder(tmp_path, small_pair, shard):
    base, _ = small_pair
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(base / "config.json", folder)
    weights = load_file(base / "model.safetensors")
    save_file(weights, tmp_path / "outside.safetensors")  # a valid file it could have read
    index = {"weight_map": dict.fromkeys(weights, shard)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="not a plain file name inside the folder"):
        CheckpointReader(folder)


def test_tensor_names_cannot_write_outside_the_output(tmp_path, small_pair, rel):
    """Tensor names go into safetensors headers only; a name shaped like a path writes no file."""
    base, adapted = small_pair
    names = ("../../escaped.weight", "/tmp/absolute.weight")
    pair = []
    for src in (base, adapted):
        dst = tmp_path / "in" / src.name
        shutil.copytree(src, dst)
        weights = load_file(dst / "model.safetensors")
        weights.update({n: torch.ones(4) for n in names})
        save_file(weights, dst / "model.safetensors", {"format": "pt"})
        pair.append(dst)
    recipe = tmp_path / "in" / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"base": str(pair[0]), "adapted": str(pair[1]), "default": 0.5})
    )
    out = tmp_path / "work" / "deep" / "out"
    before = rel.tree_hash(tmp_path)
    run_merge(load_recipe(recipe), out, progress=False, shard_size="50KB")
    created = set(rel.tree_hash(tmp_path)) - set(before)
    assert created and all(p.startswith("work/deep/out") or p in ("work", "work/deep")
                           for p in created), sorted(created)  # fmt: skip
    assert not Path("/tmp/absolute.weight").exists()
    with CheckpointReader(out) as reader:
        for n in names:
            assert torch.equal(reader.get(n), torch.ones(4))


def test_no_unsafe_loaders_in_the_package():
    """Static guard: no unsafe YAML/pickle loading, no remote code, no Hydra instantiation."""
    bad = re.compile(
        r"yaml\.load\(|yaml\.unsafe_load|yaml\.(Unsafe|Full)?Loader\b|pickle\.loads?\(|"
        r"trust_remote_code\s*=\s*True|hydra\.utils\.instantiate|\binstantiate\(|"
        r"weights_only\s*=\s*False|(?<![.\w])(eval|exec)\("
    )
    hits = []
    for path in ROOT.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line.split("#")[0]):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []
    loads = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in ROOT.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "torch.load(" in line and "weights_only=True" not in line
    ]
    assert loads == []
