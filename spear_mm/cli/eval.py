"""`spear-mm eval key=value ...`: lm-eval tasks and bundled suites on one model (docs/eval.md).

Nothing heavy is imported at module level: `spear-mm eval --help` never loads lm-eval.
"""

from __future__ import annotations

DESCRIPTION = (
    "Evaluate one model on bundled offline suites (general_ppl, finance_ppl, general_mc,\n"
    "finance_mc) and on any lm-eval task (online): prints a table, writes <out>/results.json,\n"
    "caches every task per model fingerprint. Examples:\n"
    "  spear-mm eval model=smollm2-135m suite=general_ppl,finance_ppl limit=10\n"
    "  spear-mm eval model=/path/to/model suite=general_retention limit=200   (online)\n"
    "  spear-mm eval model=tiny-llama suite=finance_pack data_files.spear_fpb=/abs/fpb.jsonl\n"
    "  spear-mm eval model=/path/to/model include_path=/my/lm_eval_tasks tasks=[my_task]"
)

_LIST_KEYS = ("suite", "tasks", "include_path")


def rewrite_overrides(argv: list[str]) -> list[str]:
    """`suite=a,b` / `tasks=a,b` / `include_path=a,b` mean lists (Hydra would read a comma as a
    sweep and refuse it without -m; with `-m` they stay sweeps); a single `tasks=x` or
    `include_path=DIR` is a one-item list (a single `suite=x` is a group choice already).
    `model=FOLDER` is handled for every verb by `spear_mm.cli.hydra_app.rewrite_overrides`."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        comma = "," in value
        wrap = (comma and not multirun) or (not comma and key != "suite")
        if sep and key in _LIST_KEYS and value[:1] != "[" and wrap:
            arg = f"{key}=[{value}]"
        out.append(arg)
    return out


def _task(cfg) -> int:
    """`cfg` is an EvalConfig (hydra_app converts the composed config once)."""
    import json
    from pathlib import Path

    from spear_mm.eval.harness import evaluate
    from spear_mm.eval.report import format_table
    from spear_mm.io.atomic import atomic_write_text

    results = evaluate(
        cfg.model.name,
        cfg.task_names(),
        limit=cfg.limit,
        batch_size=cfg.batch_size,
        cache_dir=cfg.cache_dir,
        seed=cfg.seed,
        max_length=cfg.max_length,
        dtype=cfg.model.dtype,
        device=cfg.device,
        data_files=cfg.data_files,
        include_path=cfg.include_path,
        use_cache=cfg.use_cache,
    )
    results["suites"] = sorted(cfg.suite)
    print(format_table(results))
    if cfg.out:
        path = Path(cfg.out) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")
        print(f"results: {path}")
    return 0


def main(argv: list[str]) -> int:
    from spear_mm.cli.hydra_app import run_verb
    from spear_mm.eval.config import EvalConfig

    return run_verb("eval", rewrite_overrides(list(argv)), EvalConfig, _task, DESCRIPTION)
