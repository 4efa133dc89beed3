"""Checkpoints on disk: one numbered file per save (checkpoint-<global step>.pth), the newest --keep-checkpoints
kept, checkpoint.pth a symlink to the newest, model_best.pth a copy of the best one's bytes. Each is written to a
temp name, flushed to disk and renamed (with its directory flushed too), so a kill at any moment leaves the last
good checkpoint whole. They hold only tensors and plain containers: they load with torch.load(weights_only=True)."""
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_file

LATEST = "checkpoint.pth"
BEST = "model_best.pth"
NUMBERED = re.compile(r"checkpoint-(\d+)\.pth")


class CheckpointError(Exception):
    """A --resume file that is no trainer checkpoint, or one whose weights do not fit the model: exit status 1."""
    exit_status = 1


def save(out, state, global_step, *, keep, is_best=False):
    """Write `state` as checkpoint-<global_step>.pth, point checkpoint.pth at it, copy it to model_best.pth if
    `is_best`, and remove all but the newest `keep` numbered files. Returns (path, bytes, seconds)."""
    started = time.perf_counter()
    out = Path(out)
    path = out / f"checkpoint-{global_step:09d}.pth"
    with atomic_file(path, durable=True) as f:
        torch.save(state, f)
    _point(out / LATEST, path.name)
    if is_best:
        with open(path, "rb") as newest, atomic_file(out / BEST, durable=True) as f:
            shutil.copyfileobj(newest, f)
    for stale in numbered(out)[keep:]:
        stale.unlink(missing_ok=True)
    return path, path.stat().st_size, time.perf_counter() - started


def _point(link, target):
    """Make `link` a symlink to `target`, replacing whatever was there in one rename."""
    part = link.with_name(f".{link.name}.link")
    part.unlink(missing_ok=True)
    os.symlink(target, part)
    os.replace(part, link)


def numbered(out):
    """The numbered checkpoints in `out`, newest (highest global step) first."""
    found = [(int(m.group(1)), p) for p in Path(out).glob("checkpoint-*.pth") if (m := NUMBERED.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def candidates(path):
    """What a resume from `path` may read, best first: the file itself, or a directory's numbered checkpoints,
    then its checkpoint.pth when that is a file of its own (written before numbered ones existed)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    latest = path / LATEST
    return numbered(path) + ([latest] if latest.is_file() and not latest.is_symlink() else [])


def is_trainer_checkpoint(state):
    return isinstance(state, dict) and "args" in state and "position" in state


def model_weights(state):
    """The weights of a loaded file that holds only a model's: a state_dict, or pytorch/examples' {"state_dict": ...}
    (DataParallel's "module." prefix dropped); None for anything else, a trainer checkpoint included."""
    if is_trainer_checkpoint(state):
        return None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or \
            not all(isinstance(name, str) and torch.is_tensor(value) for name, value in state.items()):
        return None
    return {name.removeprefix("module."): value for name, value in state.items()}


def newest_readable(paths, say):
    """(path, state) of the first of `paths` that loads as a trainer checkpoint, saying why each one before it did
    not; (None, None) when there are none. CheckpointError when there were some and none loads."""
    for number, path in enumerate(paths):
        try:
            state = load(path)
            if not is_trainer_checkpoint(state):
                raise KeyError("args" if isinstance(state, dict) else type(state).__name__)
            return path, state
        except Exception as error:  # a truncated, corrupt or foreign file: the one before it may be whole
            reason = f"{type(error).__name__}" + (f": {error}" if isinstance(error, KeyError) else "")
            if number + 1 < len(paths):
                say(f"trainer: {path} is not a readable trainer checkpoint ({reason}); trying {paths[number + 1]}")
            else:
                raise CheckpointError(f"{path} is not a readable trainer checkpoint ({reason})") from None
    return None, None


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
