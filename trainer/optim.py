"""SGD with optional weight-decay-free normalisation layers, and the learning rate as a function of how much of
the run is done, in epochs counted by samples: linear warmup, then step (x0.1 every 30 epochs), cosine or linear
decay to the end of the last epoch. Counting samples rather than steps lets a run resumed on another number of
ranks (another steps per epoch) follow the same schedule to the same end."""
import math

import torch
from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm,
               nn.LayerNorm, nn.LocalResponseNorm)
STEP_EPOCHS = 30


def build_optimizer(model, config):
    """Fused SGD with the recipe of `config` (a RunConfig): lr, momentum, weight_decay, nesterov, no_bn_weight_decay."""
    if config.no_bn_weight_decay:
        norm = [p for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)]
        norm_ids = {id(p) for p in norm}
        rest = [p for p in model.parameters() if id(p) not in norm_ids]
        params = [{"params": rest}, {"params": norm, "weight_decay": 0.0}]
    else:
        params = model.parameters()
    # fused: one kernel per step, and GradScaler hands it the overflow flag on the device instead of reading it
    # on the host (torch.amp.GradScaler.step), so fp16 training never waits for the GPU. CPUs have it too.
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov, fused=True)
    if config.momentum:
        # torch's fused SGD allocates its momentum buffers uninitialised (empty_like) at its first step, and its
        # kernel skips a step GradScaler found to overflow, as fp16's first steps usually do: the next step then
        # starts from garbage (NaN weights). Zero buffers make the same first step (buffer = momentum * 0 + grad,
        # dampening being 0) with no such hole.
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return optimizer


class Schedule:
    """Sets each parameter group's lr for the coming step from its initial lr (kept in the optimizer's state)."""

    def __init__(self, optimizer, kind, epochs, warmup_epochs):
        self.optimizer = optimizer
        self.factor = lr_factor(kind, epochs, warmup_epochs)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def apply(self, start, end):
        """The lr of a step that takes the run from `start` to `end` epochs done."""
        factor = self.factor(start, end)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]


def lr_factor(kind, epochs, warmup_epochs):
    """factor(start, end): the lr factor of a step from `start` to `end` epochs done. Warmup reaches 1 at the end
    of its last step; the decays are read at a step's start (the first step of epoch 30 is the first at x0.1)."""
    def factor(start, end):
        if start < warmup_epochs:
            return min(1.0, end / warmup_epochs)
        if kind == "step":
            return 0.1 ** (start // STEP_EPOCHS)
        progress = (start - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1 - progress
    return factor
