"""One image to its output crop: every input kind the loaders meet decodes to the right pixels."""
import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from pipeline import crops
from pipeline.decode import CorruptImage, crop_resize

COLOUR = (200, 40, 90)
SIZE = 32


def solid(height, width):
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = COLOUR
    return pixels


def encoded(pixels, format, mode="RGB"):
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format, quality=95)
    return out.getvalue()


def decode(data, box=lambda height, width: (0, 0, height, width), flip=False):
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    crop_resize(data, box, out, flip)
    return out


@pytest.mark.parametrize("data", [
    simplejpeg.encode_jpeg(solid(60, 80), quality=95),
    simplejpeg.encode_jpeg(solid(600, 800), quality=95),  # crop >= 2x output: DCT-scaled decode
    encoded(solid(60, 80), "JPEG", "CMYK"),
    encoded(solid(60, 80), "PNG"),
], ids=["jpeg", "jpeg-dct-scaled", "cmyk-jpeg", "png"])
def test_every_kind_decodes_to_its_colour(data):
    assert np.abs(decode(data).astype(int) - COLOUR).max() <= 6


def test_crop_box_and_flip_select_the_right_pixels():
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[:, 64:] = 255  # right half white
    data = simplejpeg.encode_jpeg(pixels, quality=95)
    def right_half(height, width):
        return 0, 64, 64, 64

    assert decode(data, right_half).min() > 240
    flipped = decode(data, lambda height, width: (0, 32, 64, 64), flip=True)
    assert flipped[:, :12].min() > 240 and flipped[:, -12:].max() < 15


@pytest.mark.parametrize("data", [simplejpeg.encode_jpeg(solid(60, 80))[:300], b"", b"not an image"],
                         ids=["truncated", "empty", "garbage"])
def test_undecodable_bytes_raise(data):
    with pytest.raises(CorruptImage):
        decode(data)


def test_random_resized_crop_stays_inside_the_image_with_torchvision_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, height, width = crops.random_resized_crop(rng, 375, 500)
        assert top >= 0 and top + height <= 375 and left >= 0 and left + width <= 500
        assert 0.08 * 375 * 500 * 0.9 <= height * width <= 375 * 500


def test_centre_crop_matches_resize_then_centre_crop():
    assert crops.center_crop(375, 500, 224, 256) == (23, 86, 328, 328)
