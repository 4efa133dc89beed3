"""Crop boxes (top, left, height, width) in source pixels: torchvision's RandomResizedCrop and the val centre crop."""
import math

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10  # tries at a box inside the image before the central fallback


def random_resized_crop(rng, height, width, scale=SCALE, ratio=RATIO):
    """torchvision's RandomResizedCrop.get_params, drawing from a numpy Generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(ATTEMPTS):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1)), crop_h, crop_w
    return _central_fallback(height, width, ratio)


def center_crop(height, width, crop_size, val_size):
    """Resize(val_size) then CenterCrop(crop_size), as one box in source pixels."""
    side = max(1, round(min(height, width) * crop_size / val_size))
    return (height - side) // 2, (width - side) // 2, side, side


def _central_fallback(height, width, ratio):
    aspect = width / height
    if aspect < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_w, crop_h = round(height * ratio[1]), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
