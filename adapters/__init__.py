"""Weights: base-model loading (model), the offline generator (generate), follow-up likelihood (flr),
losses and LoRA training (losses, train_config, train), evaluation, its report and the promotion
gate (evaluate, report, gate), the on-disk adapter registry (registry), and file and process
helpers (files, runtime). Knows torch, transformers and PEFT; knows nothing of HTTP."""
