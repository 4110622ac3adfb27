"""`python -m training.evaluation.downstream`: see cli.py."""
import sys

from .cli import main

sys.exit(main())
