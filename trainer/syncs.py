"""Catch a host synchronisation inside the training step, where one would stall the GPU every step.

On a GPU torch's own sync debug mode raises at any synchronising CUDA call. A CPU has nothing to wait for, but
the same code paths show themselves there as tensor-to-Python conversions (`.item()`, `bool(t)`, `.tolist()`):
GradScaler's overflow check, a loss printed every step. Both raise HostSync, naming the call.
"""
import contextlib

import torch
from torch.overrides import TorchFunctionMode

CONVERSIONS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
               torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class HostSync(RuntimeError):
    pass


@contextlib.contextmanager
def no_host_sync(device):
    """Within this block a host synchronisation raises HostSync."""
    if device.type == "cuda":
        with _cuda_sync_errors():
            yield
    else:
        with _ConversionsRaise():
            yield


@contextlib.contextmanager
def _cuda_sync_errors():
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    except RuntimeError as error:
        if "synchroniz" not in str(error):
            raise
        raise HostSync(f"a host synchronisation inside the training step: {error}") from error
    finally:
        torch.cuda.set_sync_debug_mode(previous)


class _ConversionsRaise(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in CONVERSIONS:
            raise HostSync(f"a host synchronisation inside the training step: Tensor.{func.__name__}()")
        return func(*args, **(kwargs or {}))
