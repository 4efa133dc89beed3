"""Training throughput without a device sync per step.

Time is read at window edges only (every print-freq steps and at the end of an epoch): a CUDA event is
recorded there and read when the window closes, so the GPU runs ahead undisturbed in between. Each epoch's
first `skip_steps` steps (cudnn autotuning, compilation, loader warm-up) fall outside every window.
"""
import time
from dataclasses import dataclass

import torch


class Clock:
    """Marks of finished work: CUDA events on a GPU; on a CPU, where ops return when done, wall time."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end):
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000


@dataclass(frozen=True)
class Window:
    epoch: int
    step: int          # global step at the window's end
    images: int        # over all ranks
    seconds: float
    data_wait: float   # seconds blocked in next(loader)
    resolution: int    # of the training crops

    @property
    def fps(self):
        return self.images / self.seconds

    @property
    def wait_share(self):
        return min(1.0, self.data_wait / self.seconds)


class ThroughputMeter:
    def __init__(self, clock, images_per_step, skip_steps):
        self.clock = clock
        self.images_per_step = images_per_step
        self.skip_steps = skip_steps
        self.windows = []

    def start_epoch(self):
        self.steps = 0
        self.counted = 0
        self.data_wait = 0.0
        self.start = self.clock.mark() if self.skip_steps == 0 else None

    def step(self, data_wait):
        self.steps += 1
        if self.steps == self.skip_steps:
            self.start = self.clock.mark()
        elif self.steps > self.skip_steps:
            self.counted += 1
            self.data_wait += data_wait

    def close_window(self, epoch, global_step, resolution):
        """Time the counted steps since the last edge, at crops of `resolution`; None while the epoch is still in
        its skipped steps."""
        if not self.counted:
            return None
        end = self.clock.mark()
        window = Window(epoch, global_step, self.counted * self.images_per_step,
                        self.clock.seconds(self.start, end), self.data_wait, resolution)
        self.windows.append(window)
        self.start, self.counted, self.data_wait = end, 0, 0.0
        return window

    def summary(self):
        if not self.windows:
            return {"fps_mean": None, "fps_min": None, "fps_max": None, "data_wait_share": None, "counted_images": 0}
        seconds = sum(w.seconds for w in self.windows)
        images = sum(w.images for w in self.windows)
        return {"fps_mean": images / seconds,
                "fps_min": min(w.fps for w in self.windows),
                "fps_max": max(w.fps for w in self.windows),
                "data_wait_share": min(1.0, sum(w.data_wait for w in self.windows) / seconds),
                "counted_images": images}
