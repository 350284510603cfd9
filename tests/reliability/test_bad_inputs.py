"""The bad-input table: every case runs the real CLI in a subprocess and must give exit code 2,
exactly one `spear-mm: error:` line on stderr naming what is wrong and where, no traceback, and
leave every file untouched (the whole world of inputs and outputs is hashed before and after;
nothing may change and nothing new may appear). docs/errors.md lists the same table.

`world` is built once per session: a tiny pair and broken variants of it (other shapes, more
layers, grown vocabulary, NaN/Inf, truncated or corrupt safetensors, a missing shard, an index
escaping its folder, a pickle checkpoint...), corpora and existing output folders.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from spear_mm.io.checkpoint import CheckpointReader, ShardedWriter
from spear_mm.testing import make_tiny_llama, perturb_checkpoint

NAN_TENSOR = "model.layers.1.mlp.up_proj.weight"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(folder: Path, name: str, value: float) -> None:
    path = folder / "model.safetensors"
    weights = load_file(path)
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = value
    save_file(weights, path, {"format": "pt"})


def _sharded(src: Path, dst: Path) -> Path:
    with (
        CheckpointReader(src) as reader,
        ShardedWriter(dst, source_dir=src, max_shard_bytes=40_000) as writer,
    ):
        for name, tensor in reader.iter_tensors():
            writer.add(name, tensor)
    return dst


def _build_models(m: Path) -> dict[str, Path]:
    base = make_tiny_llama(m / "base", num_layers=2, seed=0)
    adapted = perturb_checkpoint(base, m / "adapted", scale=0.2, seed=1)
    p = {"base": base, "adapted": adapted}
    p["wide"] = make_tiny_llama(m / "wide", num_layers=2, hidden=32, seed=0)
    p["deep"] = make_tiny_llama(m / "deep", num_layers=3, seed=0)
    p["grown"] = perturb_checkpoint(base, m / "grown", scale=0.0, seed=2, grow_vocab=8)
    p["nan"] = _copy(adapted, m / "nan")
    _edit_weights(p["nan"], NAN_TENSOR, float("nan"))
    p["inf"] = _copy(base, m / "inf")
    _edit_weights(p["inf"], "model.norm.weight", float("inf"))
    p["truncated"] = _copy(adapted, m / "truncated")
    blob = (p["truncated"] / "model.safetensors").read_bytes()
    (p["truncated"] / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    p["garbage"] = _copy(adapted, m / "garbage")
    (p["garbage"] / "model.safetensors").write_bytes(os.urandom(4096))
    p["missing_shard"] = _sharded(adapted, m / "missing_shard")
    shards = sorted(p["missing_shard"].glob("model-*.safetensors"))
    assert len(shards) > 2
    shards[1].unlink()
    # An index pointing one tensor at a real, valid file outside the folder.
    p["escape"] = _sharded(adapted, m / "escape")
    index = json.loads((p["escape"] / "model.safetensors.index.json").read_text())
    victim = sorted(index["weight_map"])[0]
    save_file({victim: load_file(sorted(p["escape"].glob("model-*"))[0])[victim]}, m / "x.st")
    os.replace(m / "x.st", m / "escape.safetensors")
    index["weight_map"][victim] = "../escape.safetensors"
    (p["escape"] / "model.safetensors.index.json").write_text(json.dumps(index))
    p["index_bad"] = _sharded(adapted, m / "index_bad")
    (p["index_bad"] / "model.safetensors.index.json").write_text("{ this is not json")
    p["config_bad"] = _copy(adapted, m / "config_bad")
    (p["config_bad"] / "config.json").write_text("{ nope")
    p["no_config"] = _copy(adapted, m / "no_config")
    (p["no_config"] / "config.json").unlink()
    p["pickle"] = _copy(base, m / "pickle")
    torch.save(load_file(p["pickle"] / "model.safetensors"), p["pickle"] / "pytorch_model.bin")
    (p["pickle"] / "model.safetensors").unlink()
    return p


def _build_corpora(c: Path) -> dict[str, Path]:
    c.mkdir()
    good = [{"text": f"doc {i}: the bond market and the loan rate " * 4} for i in range(30)]
    files = {
        "ok": "\n".join(json.dumps(r) for r in good) + "\n",
        "empty": '{"text": ""}\n{"text": "   "}\n\n',
        "nofield": "\n".join(json.dumps({"body": r["text"]}) for r in good) + "\n",
        "badjson": '[{"text": "one"}, {"text": ',
    }
    names = {"ok": "ok.jsonl", "empty": "empty.jsonl", "nofield": "nofield.jsonl"}
    names["badjson"] = "bad.json"
    paths = {k: c / names[k] for k in files}
    for k, text in files.items():
        paths[k].write_text(text, encoding="utf-8")
    paths["latin1"] = c / "latin1.txt"
    paths["latin1"].write_bytes("Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu. ".encode("latin-1") * 50)
    return paths


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = _build_models(root / "models")
    paths["models"] = root / "models"
    paths.update({f"corpus_{k}": v for k, v in _build_corpora(root / "corpora").items()})
    (root / "recipes").mkdir()
    (root / "outputs").mkdir()
    paths["existing_out"] = _copy(paths["base"], root / "outputs" / "existing")
    paths["a_file"] = root / "outputs" / "a_file.txt"
    paths["a_file"].write_text("not a folder\n")
    run = root / "outputs" / "previous_run"  # a finished train run that a bad re-run must keep
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "run_info.json").write_text('{"seeds": {"seed": 0}}\n')
    paths["previous_run"] = run
    paths["readonly"] = Path("/sys") if Path("/sys").is_dir() else Path("/proc")
    if os.geteuid() != 0:  # root writes anywhere but the kernel's own file systems
        paths["readonly"] = root / "outputs" / "readonly"
        paths["readonly"].mkdir()
        paths["readonly"].chmod(0o555)
    return SimpleNamespace(root=root, p={k: str(v) for k, v in paths.items()})


# ---------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """`args` / `words` are templates: `{name}` is a world path, `{recipe}` the case's recipe,
    `{out}` the case's own output folder (which must not exist afterwards)."""

    id: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    recipe: object = None  # dict (dumped as YAML) or str (written as is)


def merge_case(id, recipe, words, *extra, out="{out}"):
    return Case(id, ("merge", "{recipe}", "--out", out, "--quiet", *extra), tuple(words), recipe)


def pair(**over):
    return {"base": "{base}", "adapted": "{adapted}", **over}


TRAIN_FAST = ("trainer.max_steps=1", "trainer.progress=false", "data.general=null")


def train_case(id, words, *overrides):
    return Case(id, ("train", "model.name={base}", *TRAIN_FAST, "out={out}", *overrides), words)


def an_case(id, words, *overrides, base="{base}", adapted="{adapted}", out="{out}"):
    return Case(id, ("analyze", f"base={base}", f"adapted={adapted}", f"out={out}", *overrides),
                tuple(words))  # fmt: skip


def sw_case(id, words, *overrides, base="{base}", adapted="{adapted}", out="{out}"):
    args = ("sweep", f"base={base}", f"adapted={adapted}", f"out={out}", "probe.max_tokens=64")
    return Case(id, (*args, *overrides), tuple(words))


def ev_case(id, words, *overrides):
    args = ("eval", "model.name={base}", "limit=2", *overrides)
    return Case(id, args if any(o.startswith("out=") for o in overrides) else (*args, "out={out}"),
                tuple(words))  # fmt: skip


def run_case(id, words, *overrides):
    args = ("run", "experiment=tiny", "model.name={base}", *overrides)
    return Case(id, args if any(o.startswith("out=") for o in overrides) else (*args, "out={out}"),
                tuple(words))  # fmt: skip


CASES = [
    # -- merge recipes
    merge_case("recipe-missing-key", {"base": "{base}"}, ["key 'adapted'", "missing", "{recipe}"]),
    merge_case("recipe-misspelled-key", pair(defualt="keep"), ["key 'defualt'", "unknown key"]),
    merge_case("recipe-wrong-type", pair(rules="attention"), ["key 'rules'", "{recipe}"]),
    merge_case("recipe-t-above-1", pair(rules=[{"kinds": "mlp", "t": 1.5}]), ["rules[0].t", "[0, 1]"]),
    merge_case("recipe-t-negative", pair(default=-0.25), ["key 'default'", "-0.25"]),
    merge_case("recipe-t-boolean", pair(rules=[{"t": True}]), ["rules[0].t", "boolean"]),
    merge_case("recipe-empty-layer-range", pair(rules=[{"layers": "5-2", "t": 0.5}]),
               ["rules[0].layers", "empty"]),
    merge_case("recipe-layers-out-of-range", pair(rules=[{"layers": "0-7", "t": 0.5}]),
               ["rules[0].layers", "out of range", "0-1"]),
    merge_case("recipe-unknown-kind", pair(rules=[{"kinds": ["atention"], "t": 0.5}]),
               ["rules[0].kinds", "atention"]),
    merge_case("recipe-regex-matches-nothing", pair(rules=[{"match": "self_atn", "t": 0.5}]),
               ["rules[0].match", "matches no tensor"]),
    merge_case("recipe-invalid-regex", pair(rules=[{"match": "(", "t": 0.5}]),
               ["rules[0].match", "regular expression"]),
    merge_case("recipe-unknown-method", pair(method="cubic"), ["key 'method'", "cubic"]),
    merge_case("recipe-action-with-t", pair(rules=[{"action": "freeze", "t": 0.3}]),
               ["rules[0]", "freeze"]),
    merge_case("recipe-bad-dtype", pair(dtype="int4"), ["key 'dtype'", "int4"]),
    merge_case("recipe-not-yaml", "base: [unclosed\n", ["{recipe}", "not valid YAML"]),
    merge_case("recipe-python-tag", '!!python/object/apply:os.system ["touch pwned"]\n',
               ["{recipe}", "not valid YAML"]),
    merge_case("recipe-target-key", pair(_target_="os.system"), ["key '_target_'", "unknown key"]),
    merge_case("recipe-top-level-list", ["{base}", "{adapted}"], ["{recipe}", "mapping"]),
    merge_case("mergekit-unknown-method",
               {"merge_method": "della", "base_model": "{base}", "models": [{"model": "{adapted}"}]},
               ["merge_method", "della"]),
    Case("recipe-file-missing", ("merge", "{models}/nope.yaml", "--out", "{out}"),
         ("{models}/nope.yaml", "does not exist")),
    # -- checkpoints
    merge_case("model-folder-missing", pair(base="{models}/nope"), ["{models}/nope", "folder"]),
    merge_case("shapes-differ", pair(base="{wide}"), ["shape", "base vs"]),
    merge_case("layer-count-differs", pair(base="{deep}"), ["{deep}", "layers", "architecture"]),
    merge_case("vocab-mismatch", pair(base="{grown}"), ["model.embed_tokens.weight", "vocabulary"]),
    merge_case("missing-shard", pair(adapted="{missing_shard}"), ["shard", "is missing"]),
    merge_case("truncated-safetensors", pair(adapted="{truncated}"),
               ["{truncated}/model.safetensors", "truncated"]),
    merge_case("corrupt-safetensors", pair(adapted="{garbage}"), ["{garbage}", "corrupt"]),
    merge_case("nan-weights", pair(adapted="{nan}", default=0.5), [NAN_TENSOR, "NaN"]),
    merge_case("inf-weights-copied", pair(base="{inf}", default="freeze"),
               ["model.norm.weight", "NaN or Inf"]),
    merge_case("pickle-without-opt-in", pair(base="{pickle}"), ["pytorch_model.bin", "--allow-pickle"]),
    merge_case("index-escapes-folder", pair(adapted="{escape}"),
               ["../escape.safetensors", "not a plain file name"]),
    merge_case("index-not-json", pair(adapted="{index_bad}"), ["{index_bad}", "index"]),
    merge_case("config-not-json", pair(adapted="{config_bad}"), ["config.json", "not valid JSON"]),
    merge_case("config-missing", pair(adapted="{no_config}"), ["{no_config}", "no config.json"]),
    # -- outputs
    merge_case("out-is-input", pair(), ["--out {adapted}", "adapted model folder"], "--force",
               out="{adapted}"),
    merge_case("out-holds-input", pair(), ["--out {models}", "holds it"], "--force", out="{models}"),
    merge_case("out-exists", pair(), ["{existing_out}", "--force"], out="{existing_out}"),
    merge_case("out-not-writable", pair(), ["{readonly}", "another --out"],
               out="{readonly}/spear_merged"),
    merge_case("out-parent-is-file", pair(), ["{a_file}", "output parent"],
               out="{a_file}/merged"),
    merge_case("merge-bad-flag", pair(), ["--threads", "many"], "--threads", "many"),
    merge_case("merge-zero-threads", pair(), ["--threads 0"], "--threads", "0"),
    # -- Hydra configs
    train_case("train-misspelled-key", ["trainer.learning_rate"], "trainer.learning_rate=1e-4"),
    train_case("train-wrong-type", ["trainer.max_steps", "ten"], "trainer.max_steps=ten"),
    # model=X that is no preset is read as a folder / hub id (docs/quickstart.md): said so.
    train_case("train-unknown-model", ["'gpt5'", "not an existing folder"], "model=gpt5"),
    train_case("train-unknown-group-option", ["trainer/huge"], "trainer=huge"),
    train_case("train-not-key-value", ["'fast'", "key=value"], "fast"),
    train_case("train-out-of-range", ["data.seq_len"], "data.seq_len=4"),
    Case("run-bad-value", ("run", "experiment=tiny", "out={out}", "compare.mc_limit=-1"),
         ("compare.mc_limit",)),
    Case("run-unknown-experiment", ("run", "experiment=huge", "out={out}"), ("experiment/huge",)),
    Case("eval-misspelled-key", ("eval", "model.name={base}", "limt=3", "out={out}"), ("limt",)),
    Case("eval-bad-value", ("eval", "model.name={base}", "max_length=1", "out={out}"),
         ("max_length",)),
    # -- models and corpora at run time
    train_case("train-model-missing", ["{models}/nope", "folder"], "model.name={models}/nope"),
    train_case("train-pickle-model", ["pytorch_model.bin", "allow_pickle"], "model.name={pickle}"),
    train_case("train-truncated-model", ["{truncated}", "truncated"], "model.name={truncated}"),
    train_case("train-empty-corpus", ["data.domain", "0 non-empty"],
               "data.domain={corpus_empty}"),
    train_case("train-non-utf8-corpus", ["data.domain", "{corpus_latin1}", "UTF-8"],
               "data.domain={corpus_latin1}"),
    train_case("train-corrupt-json-corpus", ["data.domain", "{corpus_badjson}", "JSON"],
               "data.domain={corpus_badjson}"),
    train_case("train-corpus-missing-field", ["{corpus_nofield}", "'text'"],
               "data.domain={corpus_nofield}"),
    train_case("train-heldout-corpus", ["data.domain", "held out"], "data.domain=finance_heldout"),
    train_case("train-bad-resume", ["resume", "{models}/nope"], "resume={models}/nope",
               "data.domain={corpus_ok}"),
    # -- every Hydra verb: checkpoints, corpora, keys and groups, outputs (issue 17)
    an_case("analyze-base-missing", ["{models}/nope", "folder"], base="{models}/nope"),
    an_case("analyze-shapes-differ", ["shape", "in base vs"], base="{wide}"),
    an_case("analyze-layer-count-differs", ["{deep}", "layers", "3 vs 2"], base="{deep}"),
    an_case("analyze-vocab-mismatch", ["model.embed_tokens.weight", "vocabulary"], base="{grown}"),
    an_case("analyze-truncated", ["{truncated}", "truncated"], adapted="{truncated}"),
    an_case("analyze-misspelled-key", ["'ablaton'"], "ablaton=true"),
    an_case("analyze-unknown-group", ["'model'"], "model=gpt5"),
    an_case("analyze-no-general-probe", ["probe.names", "probe.names=[general,finance]"],
            "ablation=true", "probe.names=[finance]"),
    an_case("analyze-out-not-writable", ["{readonly}", "out="], out="{readonly}/spear_an"),
    an_case("analyze-out-is-a-file", ["{a_file}", "not a folder"], out="{a_file}"),
    an_case("analyze-prior-wrong-format", ["prior={corpus_badjson}"], "prior={corpus_badjson}"),
    sw_case("sweep-adapted-missing", ["{models}/nope", "folder"], adapted="{models}/nope"),
    sw_case("sweep-shapes-differ", ["shape", "in base vs"], base="{wide}"),
    sw_case("sweep-layer-count-differs", ["{deep}", "3 vs 2", "architecture"], base="{deep}"),
    sw_case("sweep-vocab-mismatch", ["model.embed_tokens.weight", "vocabulary"], base="{grown}"),
    sw_case("sweep-misspelled-key", ["'knobz'"], "knobz=[0.5]"),
    sw_case("sweep-unknown-group", ["suite/nope"], "suite=nope"),
    sw_case("sweep-analysis-wrong-format", ["{corpus_badjson}", "JSON"],
            "analysis={corpus_badjson}"),
    sw_case("sweep-out-not-writable", ["{readonly}", "out="], out="{readonly}/spear_sw"),
    ev_case("eval-model-missing", ["{models}/nope", "folder"], "model.name={models}/nope"),
    ev_case("eval-truncated-model", ["{truncated}", "truncated"], "model.name={truncated}"),
    ev_case("eval-unknown-group", ["suite/nope"], "suite=nope"),
    ev_case("eval-empty-data-file", ["data_files.spear_general_ppl", "no non-empty record"],
            "+data_files.spear_general_ppl={corpus_empty}"),
    ev_case("eval-wrong-format-data-file", ["{corpus_badjson}", "not a JSON object"],
            "+data_files.spear_general_ppl={corpus_badjson}"),
    ev_case("eval-out-not-writable", ["{readonly}", "out="], "out={readonly}/spear_ev"),
    Case("train-out-not-writable",
         ("train", "model.name={base}", *TRAIN_FAST, "out={readonly}/spear_tr"),
         ("{readonly}", "out=")),
    train_case("train-unknown-trainer", ["trainer/nope"], "trainer=nope"),
    run_case("run-model-missing", ["{models}/nope", "folder"], "model.name={models}/nope"),
    run_case("run-empty-corpus", ["data.domain", "0 non-empty"], "data.domain={corpus_empty}"),
    run_case("run-wrong-format-corpus", ["data.domain", "{corpus_badjson}", "JSON"],
             "data.domain={corpus_badjson}"),
    run_case("run-misspelled-key", ["'analyse'"], "analyse.ablation=false"),
    run_case("run-out-not-writable", ["{readonly}", "out="], "out={readonly}/spear_run"),
    Case("train-rerun-bad-corpus-keeps-run",
         ("train", "model.name={base}", *TRAIN_FAST, "out={previous_run}",
          "data.domain={corpus_latin1}"),
         ("data.domain", "UTF-8")),
]  # fmt: skip


def _fill(template: str, values: dict) -> str:
    return template.format(**values)


def _write_recipe(case: Case, values: dict) -> None:
    path = Path(values["recipe"])
    if isinstance(case.recipe, str):
        path.write_text(case.recipe)
    elif case.recipe is not None:
        text = yaml.safe_dump(case.recipe, sort_keys=False)
        path.write_text(_fill(text, values))


def test_table_has_at_least_30_distinct_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exit_2_one_line_nothing_touched(case, world, rel, cli_env):
    values = {
        **world.p,
        "recipe": str(world.root / "recipes" / f"{case.id}.yaml"),
        "out": str(world.root / "outputs" / case.id),
    }
    _write_recipe(case, values)
    args = [_fill(a, values) for a in case.args]
    before = rel.tree_hash(world.root)
    proc = rel.run_cli(cli_env, *args, cwd=world.root, timeout=180)
    after = rel.tree_hash(world.root)

    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("spear-mm: error: ")
    for word in case.words:
        assert _fill(word, values) in line, (word, line)
    changed = sorted(k for k in before if after.get(k) != before[k])
    created = sorted(set(after) - set(before))
    assert changed == [] and created == [], (changed, created)
