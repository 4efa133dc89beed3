"""One training epoch and one evaluation pass; setup, checkpoints and the report live in fit.py."""
import contextlib
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from trainer.distributed import sum_over_ranks
from trainer.model import training_loss
from trainer.syncs import no_host_sync


def autocast(device, amp_dtype):
    return torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None)


@dataclass
class Training:
    model: torch.nn.Module       # the module whose weights are checkpointed
    step_model: torch.nn.Module  # what a step calls: `model`, DDP-wrapped and/or compiled
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0  # steps done in `epoch`
    static_loss_scale: float | None = None  # fp16's loss scale when fixed (overflowing steps are still skipped)
    check_syncs: bool = False  # raise HostSync at a host synchronisation inside a step past the warm-up

    @property
    def global_step(self):
        return self.epoch * self.steps_per_epoch + self.step

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                "step": self.step, "global_step": self.global_step, "steps_per_epoch": self.steps_per_epoch}


def train_step(t, images, labels):
    """Forward, backward, optimizer and schedule step; the loss stays on the device (reading it would sync)."""
    with autocast(t.device, t.amp_dtype):
        loss = training_loss(t.criterion, t.step_model(images), labels)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update(t.static_loss_scale)  # None: grow and back off (dynamic)
    t.scheduler.step()
    return loss.detach()


def train_epoch(t, batches, meter, log, print_freq, stop_at=None):
    """The rest of epoch t.epoch (from step t.step) from the iterator `batches`, or up to global step `stop_at`.

    The host waits for the device only at print boundaries (the meter's clock and the loss read there)."""
    t.step_model.train()
    meter.start_epoch()
    loss_sum, losses = torch.zeros((), device=t.device), 0
    while t.step < t.steps_per_epoch and t.global_step != stop_at:
        waited = time.perf_counter()
        images, labels = next(batches)
        waited = time.perf_counter() - waited
        # cudnn autotuning, DDP's bucket rebuild and compilation may sync in the warm-up steps the meter skips
        checked = t.check_syncs and meter.steps >= meter.skip_steps
        with no_host_sync(t.device) if checked else contextlib.nullcontext():
            loss_sum += train_step(t, images, labels)
        t.step += 1
        meter.step(waited)
        losses += 1
        if t.step % print_freq == 0 or t.step == t.steps_per_epoch or t.global_step == stop_at:
            window = meter.close_window(t.epoch, t.global_step)
            log.train(t.epoch, t.step, t.steps_per_epoch, t.global_step, loss_sum.item() / losses,
                      t.scheduler.get_last_lr()[0], window)
            loss_sum.zero_()
            losses = 0


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
