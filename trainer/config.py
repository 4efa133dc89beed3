"""A run's settings as one frozen object, built once from the command line (trainer/args.py) with every default
resolved, then only ever replaced, never changed: by a resume adopting the checkpoint's settings, by the learning rate
default once the world size is known, by a spawned process naming its own device.

What a --resume takes from the checkpoint is declared on each field (`checkpoint_keeps`), so a new flag cannot be
left out of a list kept elsewhere: a field without the declaration follows the command line."""
import dataclasses
from dataclasses import dataclass, field

import torch

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# The resume rules a field may declare:
MODEL = "model"        # what the weights are: every resume keeps it, an evaluation-only one too
SCHEDULE = "schedule"  # what fixes the schedule and the data order: a resumed training run ends where the first would
_RESUME = "resume"     # the metadata key holding the rule


def checkpoint_keeps(rule):
    """Declares a field whose value a --resume takes from the checkpoint: rule MODEL or SCHEDULE."""
    return field(metadata={_RESUME: rule})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run, named as its flag's dest; trainer/args.py documents the flags."""
    # what to train, on what, where
    data_path: str               # a directory, or a URL
    output_dir: str
    cache_dir: str | None        # a URL's node-local shard cache; None: the pipeline's default
    cache_limit: int | None      # bytes
    data_timeout: float          # seconds: the longest wait for data or for another rank
    order: str = checkpoint_keeps(SCHEDULE)  # --shuffle: global or shard-window, the data order
    window: int | None = checkpoint_keeps(SCHEDULE)  # --shuffle-window: shards; None until the train loader says
    model: str = checkpoint_keeps(MODEL)
    num_classes: int | None = checkpoint_keeps(MODEL)  # None: the dataset's class count
    device: str                  # this process's: cuda, cuda:N or cpu (a spawn gives each its cuda:N)
    loader: str                  # a pipeline backend
    # per process (--multiprocessing-distributed divides the node's); a resume keeps the checkpoint's global batch,
    # batch x world x accumulate, and derives this from it (trainer/resume.py), so it may change with the world size
    batch_size: int
    accumulate: int              # micro-batches per optimizer step
    workers: int | None          # loader workers per process, at most its cores; None: the loader's default
    epochs: int = checkpoint_keeps(SCHEDULE)
    training_step_per_epoch: int = checkpoint_keeps(SCHEDULE)  # -1: the whole epoch
    eval_step_per_epoch: int     # -1: the whole validation set
    crop_size: int = checkpoint_keeps(SCHEDULE)  # the training crop; with min_res the ramp's last, the largest
    min_res: int | None = checkpoint_keeps(SCHEDULE)  # progressive resizing's first resolution; None: off
    start_ramp: int | None = checkpoint_keeps(SCHEDULE)  # the last epoch at min_res
    end_ramp: int | None = checkpoint_keeps(SCHEDULE)    # the first at crop_size
    res_multiple: int = checkpoint_keeps(SCHEDULE)       # the ramp's resolutions are multiples of it
    crop_scale: tuple[float, float] = checkpoint_keeps(SCHEDULE)  # RandomResizedCrop's area share
    crop_ratio: tuple[float, float] = checkpoint_keeps(SCHEDULE)  # and aspect ratios
    val_size: int
    val_crop_size: int           # validation's centre crop: the test-time resolution
    print_freq: int
    skip_steps: int
    # the recipe
    recipe: str | None           # the named recipe the defaults came from (trainer/recipes.py); None: none
    lr: float | None = checkpoint_keeps(SCHEDULE)  # None until with_default_lr knows the world size
    lr_per_256: float = checkpoint_keeps(SCHEDULE)  # lr's default per 256 images of global batch
    lr_schedule: str = checkpoint_keeps(SCHEDULE)
    warmup_epochs: float = checkpoint_keeps(SCHEDULE)
    momentum: float = checkpoint_keeps(SCHEDULE)
    weight_decay: float = checkpoint_keeps(SCHEDULE)
    nesterov: bool = checkpoint_keeps(SCHEDULE)
    no_bn_weight_decay: bool = checkpoint_keeps(SCHEDULE)
    label_smoothing: float = checkpoint_keeps(SCHEDULE)
    mixup: float = checkpoint_keeps(SCHEDULE)        # Beta(alpha, alpha) of mixup; 0: off
    cutmix: float = checkpoint_keeps(SCHEDULE)       # of CutMix; 0: off
    switch_prob: float = checkpoint_keeps(SCHEDULE)  # CutMix's share when both are on
    ema: float | None = checkpoint_keeps(SCHEDULE)   # the average's decay per step; None: no average
    ema_every: int = checkpoint_keeps(SCHEDULE)      # steps between its updates
    seed: int = checkpoint_keeps(SCHEDULE)
    amp: str                     # off, fp16 or bf16 (--opt-level is folded in)
    loss_scale: float | None     # fp16's static loss scale; None: dynamic
    channels_last: bool
    compile: bool
    # control
    resume: str                  # "auto" (the newest readable checkpoint in output_dir, if any), a file or a directory
    start_weights: str | None    # a file of weights only the run starts from when it has no checkpoint (--pretrained's
                                 # in the torch cache, or one given to --resume); None: randomly initialised
    checkpoint_every_steps: int | None      # a mid-epoch checkpoint every N optimizer steps
    checkpoint_every_seconds: float | None  # or every N seconds
    keep_checkpoints: int
    log_samples: bool
    evaluate: bool               # evaluate only: the checkpoint's weights (none is refused), or with
    evaluate_untrained: bool     # randomly initialised ones, asked for explicitly
    start_epoch: int | None
    eval_freq: int
    stop_step_num: int | None
    check_syncs: bool
    # the processes (trainer/launch.py)
    multiprocessing_distributed: bool
    world_size: int | None       # spawning: nodes; else processes; None: 1 node, or the launcher's WORLD_SIZE
    rank: int | None             # spawning: this node's; else this process's; None: node 0, or the launcher's RANK
    local_rank: int | None       # torch.distributed.launch's --local_rank; None: the launcher's LOCAL_RANK, or 0
    init_method: str             # where the processes meet: a tcp:// or file:// URL, or env://
    dist_backend: str | None     # None: nccl on CUDA, gloo on CPU
    device_list: tuple[int, ...] | None  # the devices a spawn starts one process on each
    # the settings the command line gave (dests), whatever their values, so a resume or an evaluation can tell a value
    # asked for from a default: an --epochs above the checkpoint's extends the run, a --val-crop-size given wins
    given: tuple[str, ...]

    @property
    def amp_dtype(self):
        """The autocast dtype, None without AMP."""
        return AMP_DTYPES[self.amp]

    @classmethod
    def resume_keeps(cls, evaluate):
        """The fields a resume takes from the checkpoint, as declared: an evaluation-only resume keeps only what the
        weights are (its recipe and schedule are not used)."""
        rules = (MODEL,) if evaluate else (MODEL, SCHEDULE)
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(_RESUME) in rules)

    def with_default_lr(self, world_size):
        """The config with --lr's default, lr_per_256 x global batch (batch x world x accumulate) / 256, when none
        was given."""
        if self.lr is not None:
            return self
        return dataclasses.replace(self, lr=self.lr_per_256 * self.batch_size * world_size * self.accumulate / 256)

    def to_checkpoint(self):
        """The settings as a plain dict (str, numbers, bools, None, tuples), which loads with weights_only=True."""
        return dataclasses.asdict(self)
