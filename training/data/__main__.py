"""`python -m training.data`: see training/data/cli.py."""
import sys

from .cli import main

sys.exit(main())
