"""Command-line conveniences shared by the Hydra verbs (spear_mm.cli.hydra_app.rewrite_overrides)
and the eval overrides that docs/eval.md documents, run as a user types them."""

from __future__ import annotations

import json
import textwrap

import pytest

from spear_mm.cli.hydra_app import compose, rewrite_overrides
from spear_mm.cli.main import main
from spear_mm.errors import UserError
from spear_mm.eval.config import EvalConfig
from spear_mm.pipeline.config import RunConfig
from spear_mm.train.config import TrainConfig


@pytest.mark.parametrize("verb, schema", [("train", TrainConfig), ("run", RunConfig),
                                          ("eval", EvalConfig)])  # fmt: skip
def test_model_folder_or_hub_id_means_model_name(verb, schema, tmp_path):
    for value in (str(tmp_path), "org/some-model"):
        args = rewrite_overrides(verb, [f"model={value}"], schema, multirun=False)
        assert args == [f"model.name={value}"]
        cfg = compose(verb, args, schema)
        assert cfg.model.name == value and cfg.model.dtype  # the schema's defaults stay
    # A preset stays a group choice; a sweep over presets stays a sweep.
    assert rewrite_overrides(verb, ["model=tiny-llama"], schema, False) == ["model=tiny-llama"]
    assert rewrite_overrides(verb, ["model=a,b"], schema, True) == ["model=a,b"]


def test_analyze_has_no_model_group_so_model_is_left_alone():
    assert rewrite_overrides("analyze", ["model=/x"], None, False) == ["model=/x"]


def test_open_dict_entries_need_no_plus(tmp_path):
    args = rewrite_overrides("eval", ["data_files.spear_fpb=/a.jsonl"], EvalConfig, False)
    assert args == ["++data_files.spear_fpb=/a.jsonl"]
    cfg = compose("eval", args, None)
    assert cfg.data_files == {"spear_fpb": "/a.jsonl"}


def test_struct_error_names_the_plus_form():
    """An open dict entry given without `++` (as compose sees it, before rewrite_overrides)."""
    with pytest.raises(UserError, match=r"\+KEY=VALUE"):
        compose("eval", ["data_files.spear_fpb=/a.jsonl"], None)


def test_unknown_key_names_the_key_and_the_schema():
    with pytest.raises(UserError, match=r"'model.colour'.*not in 'ModelConfig'"):
        compose("eval", ["model.colour=red"], None)


def test_eval_data_files_override_as_documented(tiny_base, tmp_path, capsys):
    docs = tmp_path / "fpb.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"sentence": f"Profit rose {i}%.", "label": i % 3}) + "\n" for i in range(4)
        )  # fmt: skip
    )
    code = main(["eval", f"model={tiny_base}", "suite=[]", "tasks=[spear_fpb]",
                 f"data_files.spear_fpb={docs}", "limit=2", f"cache_dir={tmp_path / 'c'}",
                 f"out={tmp_path / 'ev'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "spear_fpb" in results["tasks"]


def test_eval_include_path_runs_a_users_own_task(tiny_base, tmp_path, capsys):
    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Ledger line {i}."}) + "\n" for i in range(3)))
    (tasks / "my_ppl.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: my_ppl
            dataset_path: json
            dataset_kwargs: {{data_files: {{test: {docs}}}}}
            test_split: test
            output_type: loglikelihood_rolling
            doc_to_text: ""
            doc_to_target: "{{{{text}}}}"
            metric_list:
              - metric: bits_per_byte
                aggregation: bits_per_byte
                higher_is_better: false
            """
        )
    )
    args = ["eval", f"model={tiny_base}", "suite=[]", "tasks=[my_ppl]", f"include_path={tasks}",
            "limit=2", f"cache_dir={tmp_path / 'c'}", f"out={tmp_path / 'ev'}"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["tasks"]["my_ppl"]["score"] > 0
    assert main([*args[:-1], f"include_path={tmp_path / 'nope'}"]) == 2
    assert "include_path" in capsys.readouterr().err


@pytest.mark.parametrize(
    "verb, schema, args",
    [
        ("analyze", "spear_mm.analyze.config:AnalyzeConfig", ["base=a", "adapted=b"]),
        ("sweep", "spear_mm.sweep.config:SweepConfig", ["base=a", "adapted=b"]),
        ("run", "spear_mm.pipeline.config:RunConfig", ["experiment=tiny"]),
        ("train", "spear_mm.train.config:TrainConfig", []),
    ],
)
def test_every_task_gets_its_dataclass(verb, schema, args, tmp_path):
    """hydra_app converts once: the task receives `cfg: XConfig`, never a DictConfig."""
    import importlib

    from spear_mm.cli.hydra_app import run_verb

    module, name = schema.split(":")
    cls = getattr(importlib.import_module(module), name)
    seen = []
    assert run_verb(verb, [*args, f"out={tmp_path / 'o'}"], cls, seen.append) == 0
    assert type(seen[0]) is cls and seen[0].out == str(tmp_path / "o")
    assert (tmp_path / "o" / "config.yaml").is_file()  # the resolved config is still saved
