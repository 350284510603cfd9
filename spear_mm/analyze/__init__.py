"""Layer-impact analysis: weight-only signals, per-layer ablation, validation and policies.

`spear-mm analyze` = `run.analyze(cfg)`. Pure kernels live in `signals`, `aggregate`, `validate`
and `policies`; `stream`, `ablation` and `report` do the I/O. See docs/analyzer.md.
"""
