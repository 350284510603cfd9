"""Continual pretraining: config schema, data stream, loop, checkpoints (see docs/train.md)."""
