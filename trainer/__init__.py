"""A lean DDP ImageNet trainer around pipeline.make_loader: `python -m trainer --help`; from a program,
`trainer.run(trainer.configure(data_path="shards/", batch_size=256, ...))`, which returns the report."""
from trainer.args import configure
from trainer.fit import run

__all__ = ["configure", "run"]
