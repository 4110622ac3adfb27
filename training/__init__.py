"""Training side of MedGAN Studio: `data` (ingestion), `gan` (training), `evaluation` (metrics, the downstream
study), `publish` (cards, the Hub, medigan packages). The user commands are thin modules here:
`python -m training.data`, `training.train`, `training.evaluate`, `training.downstream`, `training.audit`,
`training.push`, `training.card`, `training.export_medigan`; and `training.grow`."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: the Space's files, the default working folder
