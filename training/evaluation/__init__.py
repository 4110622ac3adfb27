"""Evaluation: `evaluate` (FID, KID, precision/recall, diversity, copying; `python -m training.evaluate`),
`metrics`, `features` (Inception, cached per dataset), `model_folder` (what evaluate and the downstream study
share: the model, their JSON records, versions, config.json's metrics and the card), `downstream/` (does a
classifier gain from the images?)."""
