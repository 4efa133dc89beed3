"""One training epoch and one evaluation pass; setup, checkpoints and the report live in fit.py."""
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from trainer.distributed import sum_over_ranks
from trainer.model import training_loss
from trainer.syncs import no_host_sync


def autocast(device, amp_dtype):
    return torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None)


@dataclass
class Position:
    """Where a run is. `consumed` counts the epoch's samples trained on, over all ranks: a resume on another number
    of ranks continues the epoch's one order from there (pipeline.sampling)."""
    epoch: int = 0
    consumed: int = 0
    global_step: int = 0  # optimizer steps done in all


@dataclass
class Training:
    model: torch.nn.Module       # the module whose weights are checkpointed
    step_model: torch.nn.Module  # what a step calls: `model`, DDP-wrapped and/or compiled
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: object             # trainer.optim.Schedule
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    global_batch: int            # samples per optimizer step over all ranks: batch x world x accumulate
    accumulate: int              # micro-batches per optimizer step
    steps_per_epoch: int         # optimizer steps of an epoch at this global batch (--training_step_per_epoch caps)
    position: Position
    static_loss_scale: float | None = None  # fp16's loss scale when fixed (overflowing steps are still skipped)
    check_syncs: bool = False  # raise HostSync at a host synchronisation inside a step past the warm-up
    mixing: object = None      # trainer.mixing.Mixing, with --mixup/--cutmix
    ema: object = None         # trainer.ema.EMA, with --ema
    resolution: object = None  # epoch -> the side of its training crops (trainer.resolution); None: the loader's

    @property
    def step(self):
        """Optimizer steps done in this epoch."""
        return self.position.consumed // self.global_batch

    def epochs_done(self, consumed):
        """The run's progress in epochs when `consumed` samples of the current epoch are done."""
        return self.position.epoch + consumed / (self.steps_per_epoch * self.global_batch)

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "position": asdict(self.position),
                "global_batch": self.global_batch, "steps_per_epoch": self.steps_per_epoch,
                "ema": self.ema.state_dict() if self.ema else None}


def train_step(t, batches, checked):
    """One optimizer step over `accumulate` micro-batches of `batches`, the learning rate set by how far it takes
    the run. Returns (the loss, still on the device: reading it would sync; seconds blocked in next(batches)).
    `checked`: the host-sync guard around the step's device work (not around the loader's)."""
    guard = (lambda: no_host_sync(t.device)) if checked else contextlib.nullcontext
    t.optimizer.zero_grad(set_to_none=True)
    loss_sum, waited = torch.zeros((), device=t.device), 0.0
    for micro in range(t.accumulate):
        began = time.perf_counter()
        images, labels = next(batches)
        waited += time.perf_counter() - began
        last = micro == t.accumulate - 1
        # gradients are all-reduced once per optimizer step, at its last micro-batch
        no_sync = t.step_model.no_sync if not last and hasattr(t.step_model, "no_sync") else contextlib.nullcontext
        with guard(), no_sync():
            criterion = t.criterion
            if t.mixing:
                images, criterion = t.mixing(images, labels, criterion, t.position.global_step, micro)
            with autocast(t.device, t.amp_dtype):
                loss = training_loss(criterion, t.step_model(images), labels) / t.accumulate
            t.scaler.scale(loss).backward()
            loss_sum += loss.detach()
    with guard():
        consumed = t.position.consumed
        t.schedule.apply(t.epochs_done(consumed), t.epochs_done(consumed + t.global_batch))
        t.scaler.step(t.optimizer)
        t.scaler.update(t.static_loss_scale)  # None: grow and back off (dynamic)
    t.position.consumed += t.global_batch
    t.position.global_step += 1
    if t.ema:
        with guard():
            t.ema.update(t.position.global_step)
    return loss_sum, waited


def train_epoch(t, loader, meter, log, print_freq, after_step):
    """The rest of epoch t.position.epoch, from its position. The loader starts at that sample (it reads nothing
    before it). `after_step(t)` returns None to go on, or why to stop now; that reason is returned, None when the
    epoch ended. The host waits for the device only at print boundaries (the meter's clock, the loss read there)."""
    t.step_model.train()
    resolution = t.resolution(t.position.epoch) if t.resolution else None
    if resolution:
        loader.set_resolution(resolution)
    loader.set_epoch(t.position.epoch, start=t.position.consumed)
    batches = iter(loader)
    meter.start_epoch()
    loss_sum, losses, stop = torch.zeros((), device=t.device), 0, None
    while t.step < t.steps_per_epoch and stop is None:
        # cudnn autotuning, DDP's bucket rebuild and compilation may sync in the warm-up steps the meter skips
        loss, waited = train_step(t, batches, checked=t.check_syncs and meter.steps >= meter.skip_steps)
        loss_sum += loss
        meter.step(waited)
        losses += 1
        stop = after_step(t)
        if t.step % print_freq == 0 or t.step == t.steps_per_epoch or stop is not None:
            window = meter.close_window(t.position.epoch, t.position.global_step, resolution)
            log.train(t.position.epoch, t.step, t.steps_per_epoch, t.position.global_step, loss_sum.item() / losses,
                      t.schedule.lr, window)
            loss_sum.zero_()
            losses = 0
    return stop


@dataclass(frozen=True)
class Best:
    """The best evaluation so far: top-1, top-5, and which weights had it ("raw", or "ema" with --ema)."""
    acc1: float | None = None
    acc5: float | None = None
    weights: str | None = None

    @classmethod
    def of(cls, saved):
        return cls(saved["acc1_best"], saved["acc5_best"], saved.get("best_weights")) if saved else cls()

    def after(self, results):
        """(the best after `results`, {weights: Evaluation}; whether it is new)."""
        scored = [(result.acc1, name, result) for name, result in results.items() if result.acc1 is not None]
        if not scored:
            return self, False
        acc1, name, result = max(scored, key=lambda entry: entry[0])
        if self.acc1 is not None and acc1 <= self.acc1:
            return self, False
        return Best(acc1, result.acc5, name), True

    def state(self):
        """What a checkpoint holds of it; model_best.pth's `best_weights` says which of its weights scored."""
        return {"acc1_best": self.acc1, "acc5_best": self.acc5, "best_weights": self.weights}


class Evaluation(NamedTuple):
    acc1: float | None  # percent, over every image seen on all ranks
    acc5: float | None
    loss: float | None  # mean cross-entropy
    images: int


@torch.no_grad()
def evaluate(model, loader, device, amp_dtype):
    """Top-1/top-5 and the loss over every image this pass sees on all ranks, and that image count."""
    model.eval()
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    images_seen = 0
    for images, labels in loader:
        with autocast(device, amp_dtype):
            output = model(images)
        best = output.topk(min(5, output.shape[1]), dim=1).indices
        hits = best.eq(labels[:, None])
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        loss += torch.nn.functional.cross_entropy(output.float(), labels, reduction="sum")
        images_seen += labels.numel()
    top1, top5, loss, images_seen = sum_over_ranks([top1.item(), top5.item(), loss.item(), images_seen], device)
    if not images_seen:
        return Evaluation(None, None, None, 0)
    return Evaluation(100 * top1 / images_seen, 100 * top5 / images_seen, loss / images_seen, int(images_seen))
