"""SGD with optional weight-decay-free normalisation layers, and the learning rate as a function of the step:
linear warmup, then step (x0.1 every 30 epochs), cosine or linear decay to the last step of the last epoch."""
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


def build_scheduler(optimizer, kind, epochs, steps_per_epoch, warmup_epochs, first_step=0):
    """LambdaLR stepped once per training step, positioned at `first_step`; its state goes into the checkpoint."""
    factor = lr_factor(kind, epochs * steps_per_epoch, steps_per_epoch, round(warmup_epochs * steps_per_epoch))
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=first_step - 1)


def lr_factor(kind, total_steps, steps_per_epoch, warmup_steps):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "step":
            return 0.1 ** (step // (STEP_EPOCHS * steps_per_epoch))
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1 - progress
    return factor
