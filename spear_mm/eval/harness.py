"""lm-eval integration: evaluate a live module or a model folder on tasks and suites, cached.

`evaluate(model_or_path, tasks)` accepts lm-eval task names (`mmlu`, `gsm8k`, ...), the task
YAMLs bundled with spear_mm (`spear_general_ppl`, `spear_fpb`, ...) and suite names
(`general_ppl`, `general_retention`, ... from conf/suite/). A live `nn.Module` is wrapped in
lm-eval's `HFLM` as is (a sweep never reloads weights); a folder, built-in name or hub id is
resolved and loaded once through `spear_mm.io.sources`.

Every task's result is cached under `cache_dir` keyed by the model fingerprint, the task
definition and the settings (limit, seed, max_length, dtype, tokenizer): evaluating the base and
the adapted model once per study is enough, and an all-cached call never loads the model nor
imports lm-eval. lm-eval's own request cache (sqlite) is enabled per model fingerprint as well.

lm-eval is imported lazily (13-16 s with its task index); only bundled tasks skip the index.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from spear_mm.errors import UserError
from spear_mm.eval import suites
from spear_mm.eval.cache import ResultCache, cache_key
from spear_mm.eval.fingerprint import folder_fingerprint, state_fingerprint, tokenizer_fingerprint

# The score a table shows per task, and whether higher is better; other tasks fall back to the
# first metric lm-eval reports from PRIMARY_FALLBACK.
PRIMARY = {
    "spear_general_ppl": "bits_per_byte",
    "spear_finance_ppl": "bits_per_byte",
    "spear_general_mc": "acc_norm",
    "spear_finance_mc": "acc_norm",
    "hellaswag": "acc_norm",
    "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm",
    "winogrande": "acc",
    "mmlu": "acc",
    "gsm8k": "exact_match,strict-match",
    "spear_fpb": "acc",
    "spear_fiqa_sa": "acc",
    "spear_fin_headlines": "acc",
}
PRIMARY_FALLBACK = ("acc_norm", "acc", "exact_match,strict-match", "exact_match", "f1", "mcc")
PRIMARY_FALLBACK += ("bits_per_byte", "word_perplexity", "perplexity")


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[spear-mm eval] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    from spear_mm.io.sources import cache_home

    return cache_home() / "eval_cache"


def _resolve_device(device: str | None, model: torch.nn.Module | None) -> str:
    if device and device != "auto":
        return device
    if model is not None:
        return str(next(model.parameters()).device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        # bf16 on GPUs that run it natively, fp32 on the CPU (reference numbers).
        on_gpu = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if on_gpu else torch.float32
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"dtype '{dtype}' for eval: unknown; use auto, float32 or bfloat16")
    return value


def _model_max_length(model: torch.nn.Module, max_length: int | None) -> int:
    if max_length:
        return int(max_length)
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "max_position_embeddings", 0) or 2048)


def _resolve_batch_size(batch_size, device: str, max_len: int):
    """lm-eval's "auto" finds the batch size by catching CUDA out-of-memory errors; on the CPU
    there is no such signal (the OS kills the process), so pick a size from a token budget."""
    if batch_size != "auto":
        try:
            return int(batch_size)
        except (TypeError, ValueError):
            raise UserError(f"batch_size '{batch_size}' for eval: use auto or an integer") from None
    if device.startswith("cuda"):
        return "auto"
    return max(1, min(16, 8192 // max(1, max_len)))


def _normalize_limit(limit):
    if limit is None:
        return None
    limit = float(limit)
    if limit <= 0:
        raise UserError(f"limit={limit} for eval: must be > 0 (a count, or a fraction below 1)")
    return int(limit) if limit >= 1 else limit


def _metrics(raw: Mapping) -> dict:
    """lm-eval's 'acc,none' keys as 'acc'; other filters keep their suffix."""
    out = {}
    for key, value in raw.items():
        if "," not in key:
            continue
        name = key.removesuffix(",none")
        out[name] = None if value == "N/A" else value
    return out


def _primary(task: str, metrics: Mapping, higher: Mapping) -> tuple[str | None, bool | None]:
    candidates = [PRIMARY[task]] if task in PRIMARY else []
    for name in [*candidates, *PRIMARY_FALLBACK]:
        if metrics.get(name) is not None:
            base = name.split(",")[0]
            return name, bool(higher.get(base, base not in ("bits_per_byte",)))
    return None, None


def _entries(raw: dict, requested: Iterable[str]) -> dict[str, dict]:
    """One cacheable entry per requested task from an lm-eval results dict."""
    results, higher = raw.get("results", {}), raw.get("higher_is_better", {})
    subtasks = raw.get("group_subtasks", {})
    out = {}
    for task in requested:
        metrics = _metrics(results.get(task, {}))
        hib = higher.get(task) or {}
        name, is_higher = _primary(task, metrics, hib)
        out[task] = {
            "task": task,
            "metrics": metrics,
            "primary": name,
            "score": metrics.get(name) if name else None,
            "higher_is_better": is_higher,
            "n_samples": raw.get("n-samples", {}).get(task)
            or {"effective": results.get(task, {}).get("sample_len")},
            "version": raw.get("versions", {}).get(task),
            "subtasks": {sub: _metrics(results.get(sub, {})) for sub in subtasks.get(task, [])},
            "per_doc": _per_doc(raw.get("samples", {}).get(task), name),
        }
    return out


def _per_doc(samples, primary: str | None) -> list[list] | None:
    """[[document id, primary metric value], ...] of one task (e.g. MC correctness 0/1), in
    lm-eval's document order: what an interval over questions is bootstrapped from. None when
    lm-eval logged no samples (groups) or the primary metric is not per document (bpb)."""
    if not samples or primary is None:
        return None
    key = primary.removesuffix(",none")
    rows = []
    for sample in samples:
        value = sample.get(key)
        if not isinstance(value, int | float):
            return None  # corpus-level metrics (bits_per_byte) log tuples, not a per-doc value
        doc = sample.get("doc") if isinstance(sample.get("doc"), dict) else {}
        rows.append([str(doc.get("id", sample.get("doc_id"))), float(value)])
    return rows


def _load(model_or_path, tokenizer):
    """(module, tokenizer, fingerprint, source) without loading a folder's weights yet."""
    if isinstance(model_or_path, torch.nn.Module):
        if tokenizer is None:
            raise UserError("evaluate() got a live model without a tokenizer; pass tokenizer=")
        return model_or_path, tokenizer, state_fingerprint(model_or_path), "<in-memory>"
    from spear_mm.io.sources import resolve_model

    folder = resolve_model(model_or_path)
    return None, tokenizer, folder_fingerprint(folder), str(folder)


def evaluate(
    model_or_path,
    tasks: Iterable[str],
    *,
    tokenizer=None,
    limit: int | float | None = None,
    batch_size: int | str = "auto",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    max_length: int | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | None = "auto",
    data_files: Mapping[str, str] | None = None,
    include_path: Iterable[str | os.PathLike] = (),
    use_cache: bool = True,
    progress: bool = True,
    backend=None,
) -> dict:
    """Evaluate a model on lm-eval tasks and suites; returns the results dict (docs/eval.md).

    `model_or_path`: a live module (with `tokenizer`), a folder, a built-in name or a hub id.
    `limit`: at most that many documents per task (a fraction below 1 = that share).
    `max_length`: the context lm-eval uses (default: the model's); set it to the probe's
    `seq_len` to reproduce `probe.bits_per_byte` on the bits-per-byte tasks.
    `data_files`: {bundled task: JSON-lines file} to run a task on a local copy of its data.
    `include_path`: folders of the user's own lm-eval task YAMLs (lm-eval's `--include_path`);
    their files are part of the cache key, so an edited task is re-run.
    `use_cache=False` recomputes every task (and refreshes the cache entries).
    `backend`: an `eval.backends.LmEvalBackend` (lm-eval's multi-GPU modes); None or mode `hf`
    is the in-memory HF path.
    """
    task_list = suites.expand([tasks] if isinstance(tasks, str) else tasks)
    if not task_list:
        raise UserError("no tasks to evaluate; give suite=... or tasks=[...]")
    limit = _normalize_limit(limit)
    data_files = dict(data_files or {})
    include_path = [str(Path(p).absolute()) for p in include_path]
    suites.check_data_files(data_files)  # before any loading or logging: one-line errors
    external = backend is not None and backend.mode != "hf"
    if external:
        from spear_mm.eval.backends import check_runnable

        check_runnable(backend)
    module, tok, fingerprint, source = _load(model_or_path, tokenizer)
    dev = _resolve_device(device, module)
    torch_dtype = _resolve_dtype(dtype, dev) if module is None else next(module.parameters()).dtype
    cache = ResultCache(cache_dir or default_cache_dir())
    settings = {"limit": limit, "seed": seed, "max_length": max_length, "dtype": str(torch_dtype)}
    if include_path:
        settings["include"] = suites.folder_digest(include_path)
    if external:  # other kernels, other batching: cached apart from the in-memory results
        settings["lm_eval"] = backend.mode

    tok_fp = tokenizer_fingerprint(tok) if tok is not None else "in-folder"
    keys = {
        # records=...: entries cached before per-question records existed are not reused.
        t: cache_key(
            task=t,
            digest=suites.task_digest(t, data_files),
            tokenizer=tok_fp,
            records="per_doc-v1",
            **settings,
        )  # fmt: skip
        for t in task_list
    }
    done, todo = _lookup(cache, fingerprint, keys, use_cache, progress)
    if todo and external:
        run = {"limit": limit, "batch_size": batch_size, "seed": seed, "max_length": max_length}
        fresh = _run_backend(
            backend, module, tok, source, todo, **run, dtype=torch_dtype, device=dev,
            data_files=data_files, cache=cache, progress=progress, include_path=include_path,
        )  # fmt: skip
        for task, entry in fresh.items():
            cache.put(fingerprint, task, keys[task], entry)
            done[task] = {**entry, "cached": False}
    elif todo:
        if module is None:
            _check_headers(source)  # a broken checkpoint: one error line, before any progress
            _log(progress, f"loading {source}")
            module, tok = _load_folder(source, tok, torch_dtype, dev)
        run = {"limit": limit, "batch_size": batch_size, "seed": seed, "max_length": max_length}
        fresh = _run_lm_eval(
            module, tok, todo, **run, device=dev, data_files=data_files, cache=cache,
            fingerprint=fingerprint, progress=progress, include_path=include_path,
        )  # fmt: skip
        for task, entry in fresh.items():
            cache.put(fingerprint, task, keys[task], entry)
            done[task] = {**entry, "cached": False}
    return _report(source, fingerprint, task_list, done, settings, batch_size, dev)


def _lookup(
    cache: ResultCache, fingerprint: str, keys: Mapping[str, str], use_cache: bool, progress: bool
) -> tuple[dict[str, dict], list[str]]:
    """(cached entries, tasks still to run), in the order of `keys`."""
    done, todo = {}, []
    for task, key in keys.items():
        hit = cache.get(fingerprint, task, key) if use_cache else None
        if hit is None:
            todo.append(task)
            continue
        done[task] = {**hit, "cached": True}
        _log(progress, f"{task}: cached ({hit.get('primary')} = {hit.get('score')})")
    return done, todo


def _check_headers(folder: str) -> None:
    """Read every safetensors header of ``folder`` (cheap); raises the reader's UserError."""
    from spear_mm.io.checkpoint import CheckpointReader

    if any(Path(folder).glob("*.safetensors")):
        with CheckpointReader(folder):
            pass


def _load_folder(folder: str, tokenizer, dtype: torch.dtype, device: str):
    from spear_mm.io.sources import load_model

    model, tok = load_model(folder, dtype=dtype)
    return model.to(device), tokenizer or tok


def _run_lm_eval(
    module,
    tok,
    tasks,
    *,
    limit,
    batch_size,
    seed,
    max_length,
    device,
    data_files,
    cache,
    fingerprint,
    progress,
    include_path=(),
) -> dict[str, dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    max_len = _model_max_length(module, max_length)
    bs = _resolve_batch_size(batch_size, device, max_len)
    only_bundled = all(t in suites.bundled_tasks() for t in tasks)
    _log(
        progress,
        f"running {', '.join(tasks)} (limit={limit}, batch_size={bs}, "
        f"max_length={max_len}, device={device})",
    )
    # A stable folder (per set of data overrides) keeps `datasets`' cache of the JSON files warm.
    render_dir = cache.root / f"tasks-{cache_key(data_files=data_files)}"
    include = suites.render_tasks(render_dir, tasks, data_files)
    manager = TaskManager(
        include_path=[str(include), *include_path], include_defaults=not only_bundled
    )
    unknown = [t for t in tasks if t not in set(manager.all_tasks)]
    if unknown:
        raise UserError(
            f"task '{unknown[0]}' is not an lm-eval task, group or bundled suite; "
            "see `lm-eval ls tasks` or the suites in `spear-mm eval --help`"
        )
    from spear_mm.train.specials import document_start

    # Texts start after the token training documents start after (not the tokenizer's BOS,
    # which is a chat marker on Instruct models): the probe and lm-eval agree (docs/eval.md).
    lm = HFLM(
        pretrained=module, tokenizer=tok, batch_size=bs, max_length=max_len, device=device,
        prefix_token_id=document_start(tok),
    )  # fmt: skip
    # lm-eval keys its request cache on the request text only: keep one database per
    # model fingerprint, context length and dtype so no stale likelihood is ever reused.
    dtype = str(next(module.parameters()).dtype).removeprefix("torch.")
    requests_db = cache.root / fingerprint / f"lm_eval_requests_L{max_len}_{dtype}"
    requests_db.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        limit=limit,
        task_manager=manager,
        use_cache=str(requests_db),
        log_samples=True,  # per-question records (intervals over questions, see _per_doc)
        verbosity="WARNING",
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    seconds = time.perf_counter() - started
    if raw is None:
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    entries = _entries(raw, tasks)
    for entry in entries.values():
        entry["seconds_all_tasks"] = round(seconds, 2)
        entry["batch_size"] = bs
        entry["max_length"] = max_len
    return entries


def _lm_eval_kwargs(tasks, *, limit, batch_size, seed, device, include: list[str]) -> dict:
    """simple_evaluate's arguments besides the model, for the backends (eval.backends)."""
    return {
        "limit": limit,
        "device": device,  # one process: its device; accelerate ranks and parallelize pick theirs
        "batch_size": batch_size,
        "log_samples": True,
        "verbosity": "WARNING",
        "random_seed": seed,
        "numpy_random_seed": seed,
        "torch_random_seed": seed,
        "fewshot_random_seed": seed,
        "include_path": include,
        "include_defaults": not all(t in suites.bundled_tasks() for t in tasks),
    }


def _run_backend(backend, module, tok, source, tasks, *, limit, batch_size, seed, max_length,
                 dtype, device, data_files, cache, progress, include_path) -> dict:  # fmt: skip
    """Tasks through lm-eval's own multi-GPU modes (eval.backends): they load a folder, so a live
    module is saved to a temporary one first."""
    import tempfile

    from spear_mm.eval import backends
    from spear_mm.train.specials import document_start

    include = suites.render_tasks(cache.root / f"tasks-{cache_key(data_files=data_files)}",
                                  tasks, data_files)  # fmt: skip
    kwargs = _lm_eval_kwargs(tasks, limit=limit, batch_size=batch_size, seed=seed, device=device,
                             include=[str(include), *include_path])  # fmt: skip
    _log(progress, f"running {', '.join(tasks)} with lm_eval.mode={backend.mode}")
    with tempfile.TemporaryDirectory(dir=cache.root, prefix="model-") as tmp:
        folder = Path(source)
        if module is not None:  # a live module (sweep point): lm-eval's backends read folders
            folder = Path(tmp)
            module.save_pretrained(folder)
            tok.save_pretrained(folder)
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder)
        started = time.perf_counter()
        raw = backends.run(backend, folder, list(tasks), kwargs,
                           dtype=str(dtype).removeprefix("torch."), max_length=max_length,
                           prefix_token_id=document_start(tok))  # fmt: skip
    entries = _entries(raw, tasks)
    for entry in entries.values():
        entry["seconds_all_tasks"] = round(time.perf_counter() - started, 2)
        entry["batch_size"] = batch_size
        entry["max_length"] = max_length
    return entries


def _report(source, fingerprint, tasks, done, settings, batch_size, device) -> dict:
    from spear_mm.runinfo import versions

    return {
        "model": {"source": source, "fingerprint": fingerprint},
        "tasks": {t: done[t] for t in tasks},
        "settings": {**settings, "batch_size": batch_size, "device": device, "num_fewshot": 0},
        "versions": versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
