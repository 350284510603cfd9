"""lm-eval's multi-GPU modes as config keys (spear_mm/eval/backends.py): the arguments handed to
lm-eval and the one-line errors on a machine that cannot run a mode. No GPU is needed: nothing
here starts lm-eval."""

from __future__ import annotations

import sys

import pytest

from spear_mm.errors import UserError
from spear_mm.eval.backends import (
    LmEvalBackend,
    accelerate_command,
    check_runnable,
    lm_eval_model,
    model_args,
)


def _args(backend, **kw) -> dict:
    text = model_args(backend, "/m", dtype="bfloat16", max_length=kw.get("max_length", 4096),
                      prefix_token_id=kw.get("prefix", 128000))  # fmt: skip
    return dict(item.split("=", 1) for item in text.split(","))


def test_model_args_per_mode():
    hf = _args(LmEvalBackend())
    assert hf == {"pretrained": "/m", "dtype": "bfloat16", "max_length": "4096",
                  "prefix_token_id": "128000"}  # fmt: skip
    assert _args(LmEvalBackend(mode="hf_parallel"))["parallelize"] == "True"
    vllm = _args(LmEvalBackend(mode="vllm", tensor_parallel_size=2, data_parallel_size=4,
                               gpu_memory_utilization=0.8))  # fmt: skip
    assert (vllm["tensor_parallel_size"], vllm["data_parallel_size"]) == ("2", "4")
    assert vllm["gpu_memory_utilization"] == "0.8" and "parallelize" not in vllm
    assert lm_eval_model(LmEvalBackend(mode="vllm")) == "vllm"
    assert lm_eval_model(LmEvalBackend(mode="accelerate")) == "hf"
    extra = _args(LmEvalBackend(model_args={"max_batch_size": 64, "dtype": "float16"}))
    assert extra["max_batch_size"] == "64" and extra["dtype"] == "float16"  # passed verbatim
    with pytest.raises(UserError, match="cannot hold"):
        model_args(LmEvalBackend(), "/a,b", dtype="float32", max_length=None, prefix_token_id=None)


def test_accelerate_command_launches_one_rank_per_gpu(tmp_path):
    cmd = accelerate_command(LmEvalBackend(mode="accelerate", num_processes=4),
                             tmp_path / "s.json", tmp_path / "r.json", port=29555)  # fmt: skip
    assert cmd[0].endswith("accelerate") and cmd[1] == "launch"
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "29555"
    assert cmd[-4:] == ["-m", "spear_mm.eval.backends", str(tmp_path / "s.json"),
                        str(tmp_path / "r.json")]  # fmt: skip
    one = accelerate_command(LmEvalBackend(mode="accelerate", num_processes=1), "s", "r")
    assert "--multi_gpu" not in one


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mode": "tgi"}, "choose one of"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"num_processes": 0}, "num_processes"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ],
)
def test_bad_settings_are_one_line_errors(fields, message):
    with pytest.raises(UserError, match=message):
        LmEvalBackend(**fields)


def test_modes_that_cannot_run_here_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, whatever is installed
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="vllm is not installed"):
        check_runnable(LmEvalBackend(mode="vllm"), gpus=8)
    with pytest.raises(UserError, match="needs 4 GPU"):
        check_runnable(LmEvalBackend(mode="accelerate", num_processes=4), gpus=2)
    with pytest.raises(UserError, match="needs 1 GPU"):
        check_runnable(LmEvalBackend(mode="hf_parallel"), gpus=0)
    check_runnable(LmEvalBackend(), gpus=0)  # the default runs anywhere
    check_runnable(LmEvalBackend(mode="accelerate", num_processes=2), gpus=2)


def test_accelerate_mode_end_to_end_with_one_rank_on_the_cpu(tiny_loaded, tmp_path, monkeypatch):
    # The whole plumbing of a non-`hf` mode on this CPU machine: the live module saved to a
    # folder, `accelerate launch -m spear_mm.eval.backends` with 1 rank (no GPU needed), lm-eval's
    # results read back — the same scores and per-question records as the in-memory path.
    from spear_mm.eval import backends, harness

    monkeypatch.setattr(backends.torch.cuda, "device_count", lambda: 1)  # this process only
    model, tok = tiny_loaded
    tasks = ["spear_general_ppl", "spear_general_mc"]
    kw = dict(limit=3, max_length=256, batch_size=4, progress=False)
    live = harness.evaluate(model, tasks, tokenizer=tok, cache_dir=tmp_path / "a", **kw)
    mode = LmEvalBackend(mode="accelerate", num_processes=1)
    ext = harness.evaluate(
        model, tasks, tokenizer=tok, cache_dir=tmp_path / "b", backend=mode, **kw
    )
    for task in tasks:
        a, b = live["tasks"][task], ext["tasks"][task]
        assert b["cached"] is False and b["n_samples"]["effective"] == 3
        assert b["score"] == pytest.approx(a["score"], rel=1e-6), task
        assert b["per_doc"] == a["per_doc"], task
    assert not list((tmp_path / "b").glob("model-*"))  # the temporary model folder is gone
