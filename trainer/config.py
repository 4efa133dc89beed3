"""A run's settings as one frozen object, built once from the command line (trainer/args.py) with every default
resolved, then only ever replaced, never changed: by a resume adopting the checkpoint's settings, by the learning rate
default once the world size is known, by a spawned process naming its own device.

What a --resume takes from the checkpoint is declared on each field (`keep=` of common.options.option), so a new flag
cannot be left out of a list kept elsewhere: a field without the declaration follows the command line."""
import dataclasses
from dataclasses import dataclass

import torch

from common.options import MODEL, SCHEDULE, kept, setting
from pipeline.options import DataOptions
from trainer.options import DistOptions, MethodOptions, ModelOptions, OptimOptions, RunControl

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
GROUPS = (RunControl, DataOptions, ModelOptions, OptimOptions, MethodOptions, DistOptions)  # as --help shows them


@dataclass(frozen=True, kw_only=True)
class RunConfig(*GROUPS):
    """Every setting of a run: each group's fields (their flags' dests; the groups document them), resolved, and what
    the command line sets only through other flags."""
    init_method: str = setting()   # where the processes meet: a tcp:// or file:// URL, or env:// (--dist-url, --addr)
    start_weights: str | None = setting()  # weights only the run starts from when it has no checkpoint (--pretrained's
                                           # in the torch cache, or one given to --resume); None: randomly initialised
    checkpoint_every_steps: int | None = setting()      # --checkpoint-every: a mid-epoch checkpoint every N steps
    checkpoint_every_seconds: float | None = setting()  # or every N seconds
    # the settings the command line gave (dests), whatever their values, so a resume or an evaluation can tell a value
    # asked for from a default: an --epochs above the checkpoint's extends the run, a --val-crop-size given wins
    given: tuple[str, ...] = setting(default=())

    @property
    def amp_dtype(self):
        """The autocast dtype, None without AMP."""
        return AMP_DTYPES[self.amp]

    @classmethod
    def resume_keeps(cls, evaluate):
        """The fields a resume takes from the checkpoint, as declared: an evaluation-only resume keeps only what the
        weights are (its recipe and schedule are not used)."""
        rules = (MODEL,) if evaluate else (MODEL, SCHEDULE)
        return kept(cls, rules)

    def with_default_lr(self, world_size):
        """The config with --lr's default, lr_per_256 x global batch (batch x world x accumulate) / 256, when none
        was given."""
        if self.lr is not None:
            return self
        return dataclasses.replace(self, lr=self.lr_per_256 * self.batch_size * world_size * self.accumulate / 256)

    def to_checkpoint(self):
        """The settings as a plain dict (str, numbers, bools, None, tuples), which loads with weights_only=True."""
        return dataclasses.asdict(self)
