"""`python train.py ...`: the ResNet-50 guide's entry point, the same trainer as `python -m trainer ...`.

    python -u -m torch.distributed.launch --nproc_per_node=8 --use_env --no_python python -u ./train.py ...
"""
import sys

from trainer.fit import main

if __name__ == "__main__":  # spawned processes (--multiprocessing-distributed) import this file again
    main(sys.argv[1:])
