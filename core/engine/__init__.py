"""Compression engine: jobs (train, NetAug, distillation, T3DNet and baselines), headless."""
