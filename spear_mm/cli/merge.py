"""`spear-mm merge RECIPE.yaml --out DIR`: merge base and adapted checkpoints with a recipe.

The recipe may be native (see docs/recipes.md) or mergekit YAML (`merge_method: slerp|linear`).
`--export-mergekit FILE` writes the recipe as mergekit YAML (and merges only if --out is given).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spear-mm merge",
        description="Merge a base and an adapted checkpoint with a YAML recipe (native or "
        "mergekit). Writes the merged model and merge_report.json (t, cosine and path of every "
        "tensor) into --out, atomically.",
    )
    p.add_argument("recipe", help="recipe YAML (native, or mergekit with merge_method)")
    p.add_argument("--out", help="output model folder (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="tensors merged in parallel (output is identical for any value; default: one per "
        "available CPU, at most 4)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--shard-size", default="5GB", help="largest output shard, e.g. 500MB or 5GB (default 5GB)"
    )
    p.add_argument(
        "--buffered-io",
        action="store_true",
        help="write through the page cache even on a local disk (default there: direct I/O, "
        "see docs/merge.md); same files either way",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read .bin/.pt checkpoints (loaded with weights_only=True)",
    )
    p.add_argument(
        "--export-mergekit", metavar="FILE", help="write the recipe as mergekit YAML to FILE"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    # A merge makes no reference cycles, and the cyclic collector walking the objects that
    # importing torch creates costs ~0.2 s of a ~1.4 s start-up (measured), about a tenth of a
    # 1B merge; `run_merge` keeps it off during the merge itself for the same reason.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _merge(args)
    finally:
        if collecting:
            gc.enable()


def _merge(args) -> int:
    from spear_mm.errors import UserError
    from spear_mm.merge.executor import run_merge
    from spear_mm.merge.recipe import load_recipe

    if not args.out and not args.export_mergekit:
        raise UserError("merge needs --out DIR (or --export-mergekit FILE)")
    recipe = load_recipe(args.recipe)
    if args.export_mergekit:
        _export(recipe, Path(args.export_mergekit), args.allow_pickle)
    if not args.out:
        return 0
    report = run_merge(
        recipe,
        args.out,
        force=args.force,
        threads=args.threads,
        device=args.device,
        shard_size=args.shard_size,
        allow_pickle=args.allow_pickle,
        progress=not args.quiet,
        direct_io=False if args.buffered_io else None,
    )
    if not args.quiet:
        s = report["summary"]
        paths = ", ".join(f"{k} {v}" for k, v in s["paths"].items())
        print(
            f"merged {s['tensors']} tensors into {args.out} in {report['elapsed_s']:.1f} s "
            f"({paths}; {s['slerp_fallbacks']} SLERP fallback(s) to LERP)",
            file=sys.stderr,
        )
        for rule in report["unmatched_rules"]:
            print(f"note: {rule} of {args.recipe} matched no tensor", file=sys.stderr)
    if report["unclassified_tensors"]:
        names = report["unclassified_tensors"]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(
            f"warning: {len(names)} tensor(s) have no known kind, so no `kinds:` rule of "
            f"{args.recipe} can select them (they follow `default` or a `match:` rule): {shown}; "
            "see docs/recipes.md (kinds)",
            file=sys.stderr,
        )
    return 0


def _export(recipe, path: Path, allow_pickle: bool) -> None:
    from spear_mm.io.atomic import atomic_write_text
    from spear_mm.merge.executor import output_dtype_name, prepare
    from spear_mm.merge.mergekit_compat import export_mergekit

    job = prepare(recipe, allow_pickle=allow_pickle)
    try:
        text = export_mergekit(
            recipe,
            job.names,
            job.num_layers,
            output_dtype_name(job),
            str(job.base.folder.resolve()),
            str(job.adapted.folder.resolve()),
        )
    finally:
        job.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(f"wrote mergekit recipe {path}", file=sys.stderr)
