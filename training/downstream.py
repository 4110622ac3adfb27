"""`python -m training.downstream`: the downstream usefulness study (training/evaluation/downstream/); an alias of `python -m training.evaluation.downstream.cli`."""
import sys

from training.evaluation.downstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
