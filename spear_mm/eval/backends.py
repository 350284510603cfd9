"""lm-eval's own multi-GPU modes as config keys, passed through to lm-eval (docs/eval.md).

    mode=hf           (default) the live module in this process, wrapped in lm-eval's HFLM: a
                      sweep point is scored without writing a checkpoint
    mode=hf_parallel  lm-eval's HF backend with `parallelize=True`: one process, the model's
                      layers spread over the visible GPUs (for a model one GPU cannot hold)
    mode=accelerate   data parallel: `accelerate launch --num_processes N` runs lm-eval's HF
                      backend once per GPU and lm-eval splits the requests among the ranks
    mode=vllm         lm-eval's vLLM backend, `tensor_parallel_size` x `data_parallel_size` GPUs
                      (vllm must be installed: it is not a dependency of spear_mm)

The modes other than `hf` load the model from a folder: a live module (a sweep point, a row of
`spear-mm run`'s comparison) is saved to a temporary folder first — one checkpoint write per
evaluation, small next to an lm-eval pass at 8B. `model_args` adds lm-eval model arguments
verbatim (`lm_eval.model_args.max_batch_size=64`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spear_mm.errors import UserError

MODES = ("hf", "hf_parallel", "accelerate", "vllm")


@dataclass
class LmEvalBackend:
    """How lm-eval runs: config key `lm_eval` of `spear-mm sweep`, `compare.lm_eval` of `run`."""

    mode: str = "hf"  # hf (in memory) | hf_parallel | accelerate | vllm
    num_processes: int | None = None  # accelerate: one process per GPU; None = every visible GPU
    tensor_parallel_size: int = 1  # vllm: GPUs per model copy
    data_parallel_size: int = 1  # vllm: model copies
    gpu_memory_utilization: float = 0.9  # vllm: share of each GPU's memory it may take
    model_args: dict[str, Any] = field(default_factory=dict)  # more lm-eval model_args, verbatim

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"lm_eval.mode={self.mode!r}: choose one of {', '.join(MODES)}")
        for key in ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, key) < 1:
                raise UserError(f"lm_eval.{key}={getattr(self, key)}: must be >= 1")
        if self.num_processes is not None and self.num_processes < 1:
            raise UserError(f"lm_eval.num_processes={self.num_processes}: must be >= 1 or null")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise UserError(
                f"lm_eval.gpu_memory_utilization={self.gpu_memory_utilization}: must be in (0, 1]"
            )


def check_runnable(backend, gpus: int | None = None) -> None:
    """One-line UserError when `backend` cannot run on this machine (before any work)."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    mode = backend.mode
    if mode == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError(
            "lm_eval.mode=vllm: vllm is not installed here; install it on a CUDA machine "
            "(`pip install vllm`, a version built for your torch) or use lm_eval.mode=hf"
        )
    need = {
        "hf_parallel": 1,
        "accelerate": backend.num_processes or 1,
        "vllm": backend.tensor_parallel_size * backend.data_parallel_size,
    }.get(mode, 0)
    if need > gpus:
        raise UserError(
            f"lm_eval.mode={mode} needs {need} GPU(s), this machine has {gpus}; use "
            "lm_eval.mode=hf (the default, any device) or run where the GPUs are"
        )


def model_args(backend, folder: str | os.PathLike, *, dtype: str, max_length: int | None,
               prefix_token_id: int | None) -> str:  # fmt: skip
    """lm-eval's `--model_args` string for `folder` under `backend` (hf, hf_parallel, vllm and the
    per-rank HF model of accelerate)."""
    args: dict[str, Any] = {"pretrained": str(folder), "dtype": dtype}
    if max_length is not None:
        args["max_length"] = int(max_length)
    if prefix_token_id is not None:
        args["prefix_token_id"] = int(prefix_token_id)
    if backend.mode == "hf_parallel":
        args["parallelize"] = True
    if backend.mode == "vllm":
        args["tensor_parallel_size"] = backend.tensor_parallel_size
        args["data_parallel_size"] = backend.data_parallel_size
        args["gpu_memory_utilization"] = backend.gpu_memory_utilization
    args.update(dict(backend.model_args))
    for key, value in args.items():
        if "," in str(value) or "=" in str(value):
            raise UserError(
                f"lm_eval model argument {key}={value!r}: lm-eval's model_args cannot hold ',' "
                "or '='; move the model to a path without them"
            )
    return ",".join(f"{k}={v}" for k, v in args.items())


def lm_eval_model(backend) -> str:
    """lm-eval's model type for `backend`."""
    return "vllm" if backend.mode == "vllm" else "hf"


def accelerate_command(backend, spec: Path, result: Path, port: int | None = None) -> list[str]:
    """`accelerate launch` of `spear_mm.eval.backends` as a module: one lm-eval rank per GPU."""
    procs = backend.num_processes or max(1, torch.cuda.device_count())
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes",
           str(procs), "--num_machines", "1"]  # fmt: skip
    if procs > 1:
        cmd.append("--multi_gpu")
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", "spear_mm.eval.backends", str(spec), str(result)]


def run(backend, folder: Path, tasks: list[str], kwargs: dict, *, dtype: str,
        max_length: int | None, prefix_token_id: int | None) -> dict:  # fmt: skip
    """lm-eval's results dict (simple_evaluate's) for a model folder under a non-`hf` backend.

    `kwargs`: simple_evaluate's keyword arguments besides the model (tasks, limit, seeds,
    batch_size, include paths as `include_path`, ...), the same as the in-memory path uses."""
    check_runnable(backend)
    margs = model_args(
        backend, folder, dtype=dtype, max_length=max_length, prefix_token_id=prefix_token_id
    )
    if backend.mode != "accelerate":
        return _simple_evaluate(lm_eval_model(backend), margs, tasks, kwargs)
    with tempfile.TemporaryDirectory(prefix="spear-mm-lm-eval-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"model_args": margs, "tasks": tasks, "kwargs": kwargs}))
        proc = subprocess.run(accelerate_command(backend, spec, result), text=True,
                              capture_output=True)  # fmt: skip
        if proc.returncode != 0 or not result.is_file():
            tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
            raise UserError(f"lm_eval.mode=accelerate: the lm-eval ranks failed ({tail})")
        return json.loads(result.read_text())


def _simple_evaluate(model: str, margs: str, tasks: list[str], kwargs: dict) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    kwargs = dict(kwargs)
    manager = TaskManager(
        include_path=kwargs.pop("include_path"), include_defaults=kwargs.pop("include_defaults")
    )
    return lm_eval.simple_evaluate(
        model=model, model_args=margs, tasks=list(tasks), task_manager=manager, **kwargs
    )


def _rank_main(spec_file: str, result_file: str) -> None:
    """One accelerate rank: lm-eval's HF backend splits the requests among the ranks; rank 0
    gets the aggregated results and writes them (JSON-safe) for the parent process."""
    from spear_mm.io.atomic import json_safe

    spec = json.loads(Path(spec_file).read_text())
    raw = _simple_evaluate("hf", spec["model_args"], spec["tasks"], spec["kwargs"])
    if raw is not None:  # lm-eval returns None on ranks > 0
        Path(result_file).write_text(json.dumps(json_safe(raw), default=str))


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2])
