"""`python -m trainer --help`; under DDP: `torchrun --nproc_per_node=N -m trainer ...`."""
import sys

from trainer.fit import main

if __name__ == "__main__":
    main(sys.argv[1:])
