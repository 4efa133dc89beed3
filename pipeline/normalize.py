"""Normalisation with the ImageNet mean/std: whole uint8 batches with torch (on the GPU), single images with
OpenCV (in CPU workers, where it is 3-5x faster than torch's strided CPU kernels)."""
import math

import cv2
import numpy as np
import torch

from pipeline.options import IMAGENET_MEAN, IMAGENET_STD

MEAN_255 = np.array(IMAGENET_MEAN) * 255
STD_255 = np.array(IMAGENET_STD) * 255
_CONSTANTS = {}


def normalize(pixels, dtype, channels_last):
    """(pixels - mean) / std for a uint8 [N, H, W, 3] batch -> `dtype` [N, 3, H, W].

    NHWC storage already is the channels_last layout of the NCHW view, so that case costs no transpose.
    """
    scale, shift = _scale_shift(pixels.device)
    images = pixels.permute(0, 3, 1, 2).to(torch.float32).mul_(scale).add_(shift).to(dtype)
    if not channels_last:
        images = images.contiguous()
    return images


def _scale_shift(device):
    """x * scale + shift == (x - 255 mean) / (255 std), per channel, shaped to broadcast over NCHW."""
    if device not in _CONSTANTS:
        scale, shift = torch.tensor(1 / STD_255), torch.tensor(-MEAN_255 / STD_255)
        _CONSTANTS[device] = tuple(t.to(torch.float32).view(1, 3, 1, 1).to(device) for t in (scale, shift))
    return _CONSTANTS[device]


class ImageNormalizer:
    """Writes one normalised uint8 [H, W, 3] image into a [3, H, W] slot of a batch (any layout, any dtype).

    Its scratch buffers are allocated once, for the largest side `size`; a smaller image uses their heads."""

    def __init__(self, size, dtype, channels_last):
        self.channels_last = channels_last
        self.float_slot = dtype == torch.float32
        self.scratch = np.empty(3 * size * size, np.float32)
        self.float_pixels = np.empty(3 * size * size, np.float32) if channels_last else None
        self.matrix = np.hstack([np.diag(1 / STD_255), (-MEAN_255 / STD_255)[:, None]]).astype(np.float32)

    def __call__(self, pixels, slot):
        """`slot` is an [3, H, W] tensor view (channels_last strides when channels_last) of `pixels`' H and W."""
        target = slot.permute(1, 2, 0) if self.channels_last else slot
        out = target.numpy() if self.float_slot else _head(self.scratch, target.shape)
        if self.channels_last:
            float_pixels = _head(self.float_pixels, pixels.shape)
            np.copyto(float_pixels, pixels)  # cv2.transform keeps its input's depth
            cv2.transform(float_pixels, self.matrix, dst=out)
        else:
            for c, plane in enumerate(cv2.split(pixels)):
                cv2.addWeighted(plane, 1 / STD_255[c], plane, 0, -MEAN_255[c] / STD_255[c], dst=out[c],
                                dtype=cv2.CV_32F)
        if not self.float_slot:
            target.copy_(torch.from_numpy(out))


def _head(flat, shape):
    """The first elements of the flat array `flat`, viewed as `shape`."""
    return flat[:math.prod(shape)].reshape(shape)
