"""Decode one image straight to its output crop: libjpeg-turbo (simplejpeg) decode, OpenCV crop+resize.

When the crop is at least twice the output in both directions, libjpeg-turbo scales in the DCT domain
(1/2 ... 1/8) so the decoder emits fewer pixels and the resize never shrinks by more than 2x, where
bilinear sampling still sees every source pixel. The fast integer IDCT is FFCV's choice too. JPEGs
libjpeg-turbo cannot turn into RGB (CMYK/YCCK) and non-JPEG bytes (a PNG named .JPEG in raw ImageNet) go
through OpenCV's general decoder.
"""
import cv2
import numpy as np
import simplejpeg

TURBO_COLORSPACES = ("YCbCr", "Gray", "RGB")


class CorruptImage(ValueError):
    pass


def crop_resize(data, choose_box, out, flip):
    """Decode `data`, cut the box `choose_box(height, width)` returns and resize it into `out` ([S, S, 3] uint8)."""
    size = out.shape[0]
    header = _turbo_header(data)
    if header:
        height, width = header
        top, left, crop_h, crop_w = choose_box(height, width)
        image = _decode_jpeg(data, height, width, crop_h, crop_w, size)
        fy, fx = image.shape[0] / height, image.shape[1] / width
        top, left, crop_h, crop_w = round(top * fy), round(left * fx), round(crop_h * fy), round(crop_w * fx)
    else:
        image = _decode_other(data)
        top, left, crop_h, crop_w = choose_box(*image.shape[:2])
    roi = image[top:top + max(1, crop_h), left:left + max(1, crop_w)]
    cv2.resize(roi, (size, size), dst=out, interpolation=cv2.INTER_LINEAR)
    if flip:
        cv2.flip(out, 1, dst=out)


def check_decodes(data):
    """Raise CorruptImage unless `data` decodes in full (to find the sample a batch decoder failed on)."""
    if _turbo_header(data):
        _turbo(data)
    else:
        _decode_other(data)


def _turbo_header(data):
    """(height, width) when libjpeg-turbo can decode `data` to RGB, else None."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (height, width) if colorspace in TURBO_COLORSPACES else None


def _decode_jpeg(data, height, width, crop_h, crop_w, size):
    if crop_h >= 2 * size and crop_w >= 2 * size:
        min_height, min_width = -(-height * size // crop_h), -(-width * size // crop_w)
    else:
        min_height = min_width = 0
    return _turbo(data, min_height=min_height, min_width=min_width)


def _turbo(data, **scale):
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, **scale)
    except ValueError as error:
        raise CorruptImage(str(error)) from None


def _decode_other(data):
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise CorruptImage("not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
