"""`spear-mm` console script: dispatch a verb to its module, map errors to exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error
(traceback only with SPEAR_MM_DEBUG=1). Verb modules are imported only when used, so
`spear-mm --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import traceback

from spear_mm import __version__
from spear_mm.errors import UserError

VERBS = {
    "train": "continual pretraining of a causal LM on domain text (Hydra)",
    "analyze": "score every layer from base + adapted weights, validate by ablation",
    "merge": "build a model from base + adapted with a YAML recipe (native or mergekit)",
    "eval": "lm-eval benchmarks, bundled offline suites and fast bits-per-byte probes",
    "sweep": "trade-off sweep: retention vs domain gain kept, Pareto frontier, target solver",
    "run": "the whole study: train → analyze → sweep → select → merge → report",
}

USAGE = (
    f"""usage: spear-mm [--version] VERB [ARGS...]

spear_mm {__version__}: adapt an LLM to a domain by continual pretraining, then restore what it
forgot by selective, layer-aware merging with the base model (SPEAR-MM).

verbs:
"""
    + "\n".join(f"  {v:<8} {d}" for v, d in VERBS.items())
    + """

`spear-mm VERB --help` shows a verb's options. Hydra verbs take key=value overrides, e.g.
  spear-mm train model=smollm2-135m data=finance_demo trainer.max_steps=50 out=runs/cpt
  spear-mm merge recipes/balanced.yaml --out merged/
"""
)


def _fail(code: int, message: str) -> int:
    print(f"spear-mm: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _one_line_usage_errors():
    """argparse prints its usage block plus the error and exits 2; make that the same single
    `spear-mm: error:` line as any other bad input (the usage is one `--help` away)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}; see `{self.prog} --help`")

    saved = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = saved  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"spear_mm {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if not sys.stderr.isatty():
        # Hugging Face progress bars in a log or a pipe are noise, and would put lines around
        # the one-line error of a bad input. Read at import time, so set before any import.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if verb not in VERBS:
        return _fail(2, f"error: unknown verb '{verb}'; choose one of {', '.join(VERBS)}")
    module_name = f"spear_mm.cli.{verb}"
    if importlib.util.find_spec(module_name) is None:
        return _fail(2, f"error: `spear-mm {verb}` is not built yet in this version")
    try:
        module = importlib.import_module(module_name)
        with _one_line_usage_errors():
            return int(module.main(rest) or 0)
    except UserError as exc:
        return _fail(2, f"error: {exc}")
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    except SystemExit as exc:  # argparse's own exits (usage errors are code 2 already)
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("SPEAR_MM_DEBUG"):
            traceback.print_exc()
        detail = " ".join(str(exc).split())[:300]
        return _fail(
            1,
            f"internal error: {type(exc).__name__}: {detail} "
            "(set SPEAR_MM_DEBUG=1 for the traceback)",
        )


# Verbs whose process may end without the interpreter's teardown: everything they write is closed,
# synced and renamed before `main` returns (or removed, on an error), and they register no exit
# handlers. Tearing down torch's modules costs ~0.3 s at exit, a tenth of a 1B merge (measured).
FAST_EXIT = frozenset({"merge"})


def entry() -> None:
    code = main()
    if sys.argv[1:2] and sys.argv[1] in FAST_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
