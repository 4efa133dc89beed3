"""What a run needs of the machine, checked once before any process starts: on the CPU the node's processes share
its memory, so N processes of a large model (the VGG16 guide's 8-device script on a machine without 8 GPUs) are
refused in one line instead of being killed by the OOM killer mid-step; fp16 autocast on the CPU is said to be slow.

A training process holds its weights, their gradients, the optimizer's momentum and (in DDP) the gradient buckets,
plus the activations its backward pass keeps. The activations are measured, not guessed: one forward pass of the
model on the meta device (no memory, no compute) at the batch and crop, counting the tensors autograd saves."""
import warnings

import torch
import torchvision

from common.errors import UsageError
from common.machine import available_memory, human_bytes
from common.placement import launcher_placement

SLOW_FP16 = "fp16 autocast on the CPU has no fast kernels, so a step is many times slower than without AMP; " \
            "--amp bf16 is the CPU's half precision"
# Copies of the weights a training process holds: weights, gradients, momentum, and DDP's gradient buckets.
WEIGHT_COPIES = {False: 3, True: 4}


def check_machine(config, say):
    """Say what the machine will do badly, and refuse (UsageError) what it cannot do, before a process starts."""
    if config.evaluate or not config.device.startswith("cpu"):
        return
    if config.amp == "fp16":
        say(f"trainer: fp16 AMP (--amp fp16, --opt-level O1 or O2) on the CPU: {SLOW_FP16}")
    processes = node_processes(config)
    each = training_bytes(config, distributed=processes > 1 or (config.world_size or 1) > 1)
    need, available = processes * sum(each), available_memory()
    if need > available:
        weights, activations = each
        raise UsageError(
            f"{processes} training process(es) of --model {config.model} on this machine's CPU need about "
            f"{human_bytes(need)} ({human_bytes(weights)} of weights, gradients and optimizer state and "
            f"{human_bytes(activations)} of activations for a batch of {config.batch_size} at {config.crop_size} px "
            f"each); it has {human_bytes(available)} available: run fewer processes, a smaller --batch-size, or on "
            "GPUs")


def node_processes(config):
    """The run's processes on this node: a spawn's, the launcher's local world, else this one."""
    if config.multiprocessing_distributed:
        return len(config.device_list)
    return launcher_placement().local_world or 1


def training_bytes(config, distributed):
    """(weights and their training state, activations kept for the backward pass) of one training process."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # a model's note on its initialisation is build_model's to show
        model = torchvision.models.get_model(config.model, weights=None, num_classes=config.num_classes or 1000)
        # BatchNorm refuses a training batch of one (build_loaders says so in its words): measured at two, halved
        measured = max(config.batch_size, 2)
        images = torch.empty(measured, 3, config.crop_size, config.crop_size)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) * WEIGHT_COPIES[distributed]
    kept = {}

    def count(tensor):
        if not (tensor.is_leaf and tensor.requires_grad):  # a weight an op keeps is counted with the weights
            kept[id(tensor)] = tensor.numel() * tensor.element_size()  # by object: a tensor two ops keep, once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        model.train()(images)
    activations = sum(kept.values()) * config.batch_size // measured
    if config.amp != "off":  # autocast keeps most activations in 16 bits (the meta device does not autocast)
        activations //= 2
    return weights, activations

