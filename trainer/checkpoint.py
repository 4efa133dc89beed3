"""Checkpoints hold only tensors and plain containers, so they load with torch.load(weights_only=True)."""
import random
import shutil

import numpy as np
import torch

from common.atomic import atomic_file

LATEST = "checkpoint.pth"
BEST = "model_best.pth"


class CheckpointError(Exception):
    """A --resume file that is no trainer checkpoint, or one whose weights do not fit the model: exit status 1."""
    exit_status = 1


def save(out, state, is_best):
    """checkpoint.pth, and model_best.pth as a copy of its bytes rather than a second serialisation."""
    with atomic_file(out / LATEST, durable=True) as f:
        torch.save(state, f)
    if is_best:
        with open(out / LATEST, "rb") as latest, atomic_file(out / BEST, durable=True) as f:
            shutil.copyfileobj(latest, f)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(device):
    """This process's generators (torch, the current CUDA device, numpy, python `random`) as plain lists,
    which all_gather_object can carry between ranks."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state().tolist(),
            "cuda": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None,
            "numpy": [kind, keys.tolist(), position, has_gauss, cached_gauss],
            "python": [version, list(internal), gauss_next]}


def set_rng_state(state, device):
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
