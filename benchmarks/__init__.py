"""Reproducible speed measurements of MedGAN Studio: `python -m benchmarks [--quick] [--sections ...]`."""
