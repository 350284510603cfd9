"""Evaluation: fast bits-per-byte probes, lm-eval integration, bundled suites, metrics.

- `probe`: native, batched, token-budgeted bits-per-byte (`bits_per_byte`, `Probe`).
- `harness`: `evaluate(model_or_path, tasks)` through lm-eval, cached per model fingerprint.
- `suites`: the suites of `conf/suite/` and the bundled task YAMLs in `eval/tasks/`.
- `metrics`: retention, domain gain kept, forgetting recovered (pure).
- `fingerprint`: content hashes of model folders and live modules.

Submodules are imported on demand: `import spear_mm.eval` loads neither torch nor lm-eval.
"""
