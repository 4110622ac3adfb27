"""Downstream usefulness of a generator: does training a classifier on its images help on real scans?

`design` (tasks, regimes, classifiers), `task` (real data, leakage check, synthetic pool), `classifiers`, `stats`,
`study` (`run_study`), `schema` (downstream.json), `report` (figure, summaries), `card` (the model card's
section), `cli` (`python -m training.downstream`).
"""
