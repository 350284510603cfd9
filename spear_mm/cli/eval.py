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
    "  spear-mm eval model=tiny-llama suite=finance_pack data_files.spear_fpb=/abs/fpb.jsonl"
)

_LIST_KEYS = ("suite", "tasks")


def _model_options() -> set[str]:
    from spear_mm.cli.hydra_app import CONF_DIR

    return {p.stem for p in (CONF_DIR / "model").glob("*.yaml")}


def rewrite_overrides(argv: list[str]) -> list[str]:
    """Command-line conveniences, applied before Hydra sees the overrides.

    - `suite=a,b` / `tasks=a,b` mean lists (Hydra would read a comma as a sweep and refuse it
      without -m); with `-m` they stay sweeps.
    - `model=X` where X is not a `conf/model` option (a folder, a hub id) means `model.name=X`.
    """
    multirun = any(a in ("-m", "--multirun") for a in argv)
    options = _model_options()
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _LIST_KEYS and "," in value and not multirun and value[:1] != "[":
            arg = f"{key}=[{value}]"
        elif sep and key == "model" and value not in options and "," not in value:
            arg = f"model.name={value}"
        out.append(arg)
    return out


def _task(cfg) -> int:
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from spear_mm.eval.harness import evaluate
    from spear_mm.eval.report import format_table
    from spear_mm.io.atomic import atomic_write_text

    conf = OmegaConf.to_object(cfg)
    results = evaluate(
        conf.model.name,
        conf.task_names(),
        limit=conf.limit,
        batch_size=conf.batch_size,
        cache_dir=conf.cache_dir,
        seed=conf.seed,
        max_length=conf.max_length,
        dtype=conf.model.dtype,
        device=conf.device,
        data_files=conf.data_files,
        use_cache=conf.use_cache,
    )
    results["suites"] = sorted(conf.suite)
    print(format_table(results))
    if conf.out:
        path = Path(conf.out) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")
        print(f"results: {path}")
    return 0


def main(argv: list[str]) -> int:
    from spear_mm.cli.hydra_app import run_verb
    from spear_mm.eval.config import EvalConfig

    return run_verb("eval", rewrite_overrides(list(argv)), EvalConfig, _task, DESCRIPTION)
