"""--mixup ALPHA and --cutmix ALPHA: batch-level mixing on the device, trained with the matching soft-target loss.

Each micro-batch is mixed with itself reversed: mixup blends whole images, CutMix pastes a box, both with a
weight drawn from Beta(alpha, alpha); with both on, CutMix is chosen with --switch-prob. The draws come from a
generator seeded by (seed, global step, micro-batch, rank), on the host, so a step never waits for the device
and a resumed run draws what an unbroken one would. Accuracy stays measured against the hard labels."""
import math

import numpy as np


class Mixing:
    def __init__(self, mixup, cutmix, switch_prob, seed, rank):
        self.mixup, self.cutmix, self.switch_prob = mixup, cutmix, switch_prob
        self.seed, self.rank = seed, rank

    def __call__(self, images, labels, criterion, global_step, micro):
        """(mixed images, the criterion that scores logits against the mixed targets) for one micro-batch."""
        rng = np.random.default_rng([self.seed, global_step, micro, self.rank, 3])
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < self.switch_prob)
        lam = float(rng.beta(*(2 * [self.cutmix if use_cutmix else self.mixup])))
        if use_cutmix:
            images, lam = _paste_box(images, lam, rng)
        else:
            images = images.lerp(images.flip(0), 1 - lam)
        reversed_labels = labels.flip(0)

        def mixed(logits, _labels):
            return lam * criterion(logits, labels) + (1 - lam) * criterion(logits, reversed_labels)
        return images, mixed


def _paste_box(images, lam, rng):
    """`images` with a box of the batch reversed pasted, covering about 1 - lam of the area; the exact share kept,
    as lam. Only the box is flipped: the rest of the reversed batch is never needed."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    pasted = images.clone()
    pasted[..., top:bottom, left:right] = images[..., top:bottom, left:right].flip(0)
    return pasted, 1 - (bottom - top) * (right - left) / (height * width)
