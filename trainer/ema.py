"""--ema DECAY: an exponential moving average of the model, evaluated and checkpointed beside the raw weights.

Written here rather than with torch.optim.swa_utils.AveragedModel: that one reads its update counter on the host
(`bool(self.n_averaged == 0)`) at every update, a sync per step. This one is a foreach lerp on the device."""
import copy

import torch


class EMA:
    def __init__(self, model, decay, every):
        """`decay` per optimizer step; the average is updated every `every` steps with decay**every, the same time
        constant at a fraction of the cost."""
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.every = every
        self.weight = 1 - decay**every
        ema, live = self.model.state_dict(), model.state_dict()
        # floating parameters and buffers (BatchNorm statistics) averaged; the rest (step counters) copied
        self._averaged = [(ema[name], live[name]) for name in ema if ema[name].is_floating_point()]
        self._copied = [(ema[name], live[name]) for name in ema if not ema[name].is_floating_point()]

    def update(self, global_step):
        """After optimizer step `global_step` (counted from 1)."""
        if global_step % self.every:
            return
        averaged, live = zip(*self._averaged)
        torch._foreach_lerp_(list(averaged), list(live), self.weight)
        for ema, now in self._copied:
            ema.copy_(now)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
