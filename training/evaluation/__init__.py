"""Evaluation: `evaluate` (FID, KID, precision/recall, diversity, copying; `python -m training.evaluate`),
`metrics`, `features` (Inception, cached per dataset), `downstream/` (does a classifier gain from the images?)."""
