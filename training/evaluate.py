"""`python -m training.evaluate`: evaluating a generator against real slices (training/evaluation/); an alias of `python -m training.evaluation.evaluate`."""
import sys

from training.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
