"""`python -m training.push`: publishing a model folder to the Hugging Face Hub (training/publish/); an alias of `python -m training.publish.push`."""
import sys

from training.publish.push import main

if __name__ == "__main__":
    sys.exit(main())
