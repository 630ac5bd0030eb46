"""Train a CNN with fcnn: ``python train.py --help`` (the same as ``python -m fcnn.train``
and the ``fcnn-train`` command). The loop is in fcnn/train.py."""

import sys

from fcnn.train import main

if __name__ == "__main__":
    sys.exit(main())
