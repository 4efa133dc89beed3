"""Decide, mostly from headers, whether an image's bytes go into a shard as they are, re-encoded, or not at all.

Every loader downstream expects a baseline-decodable RGB JPEG. ImageNet breaks that a few times (CMYK and
greyscale JPEGs, a PNG named .JPEG) and a bad download breaks it more (empty, truncated files). Those are
found from the first header segments and the end marker; decoding everything is an option (--full-decode).
"""
import io
import struct
import warnings
from contextlib import contextmanager
from typing import NamedTuple

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# A few files carry bytes after their end marker; look for it in the tail, not only at the last byte.
EOI_WINDOW = 4096
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8), DAC (CC).
SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
SOS = 0xDA
COLOUR_REASONS = {1: "grayscale", 4: "cmyk"}
MAX_PIXELS = 100_000_000  # refuse decompression bombs: no ImageNet photo comes near this
# What PIL may open from an untrusted archive: the formats photos come in, not every plugin it ships.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


class Rejected(Exception):
    """The image cannot go into a shard; args[0] is the reason for the manifest."""


class Stored(NamedTuple):
    data: bytes  # an RGB JPEG
    reencoded: str | None  # why the input was re-encoded (cmyk, grayscale, png, resized...); None: stored as it came


def to_rgb_jpeg(data, *, max_side=None, quality=95, full_decode=False):
    """What to store for an input image: itself when it is a three-component JPEG within `max_side`, else it
    re-encoded to an RGB JPEG. Raises Rejected."""
    reason = quirk(data, max_side=max_side, full_decode=full_decode)
    return Stored(reencode(data, max_side, quality), reason) if reason else Stored(data, None)


def quirk(data, *, max_side=None, full_decode=False):
    """Why `data` is no image to store as it is (cmyk, grayscale, png, resized...), or None when it is one; from the
    headers (and a decode with `full_decode`). Raises Rejected for an image that cannot be stored at all. --adopt
    asks this of shards it rewrites nothing of."""
    if not data:
        raise Rejected("empty")
    if not data.startswith(SOI):
        return "png" if data.startswith(PNG_MAGIC) else _format(data)
    height, width, components = jpeg_frame(data)
    if height * width > MAX_PIXELS:  # a few bytes can declare 65535 x 65535: every reader would decode 4 G pixels
        raise Rejected("image too large")
    reason = COLOUR_REASONS.get(components)
    if reason is None and components != 3:
        raise Rejected(f"{components} colour components")
    if reason is None and max_side and max(height, width) > max_side:
        reason = "resized"
    if reason is None and full_decode:
        _decode(data)
    return reason


def jpeg_frame(data):
    """(height, width, components) from the start-of-frame segment; raises Rejected if the file is cut short."""
    if data.rfind(EOI, max(0, len(data) - EOI_WINDOW)) < 0:
        raise Rejected("truncated")
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise Rejected("corrupt header")
        marker = data[pos + 1]
        if marker == 0xFF or marker in STANDALONE:  # fill byte, or a marker without a length
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in SOF:
            if pos + 10 > end:
                break
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            if not (height and width):
                raise Rejected("corrupt header")
            return height, width, data[pos + 9]
        if marker == SOS or marker == EOI[1]:
            raise Rejected("no frame header")
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    raise Rejected("truncated")


def reencode(data, max_side, quality):
    """RGB JPEG bytes of any image PIL reads, shrunk to `max_side` on its longer side if given."""
    from PIL import Image

    with _decoding() as image_from:
        image = image_from(data)
        if max_side and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.LANCZOS)  # JPEG: decodes at a reduced scale first
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _decode(data):
    """Decode a JPEG with libjpeg-turbo in strict mode: PIL passes over data cut short inside the scan."""
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, fastdct=True, fastupsample=True)
    except ValueError:
        raise Rejected("undecodable") from None


def _format(data):
    """The lower-case format name of a non-JPEG image, or Rejected("not an image")."""
    with _decoding() as image_from:
        return image_from(data).format.lower()


@contextmanager
def _decoding():
    """Gives bytes -> opened PIL image; a decoding failure or a decompression bomb becomes Rejected."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield lambda data: Image.open(io.BytesIO(data), formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Rejected("image too large") from None
        except Image.UnidentifiedImageError:
            raise Rejected("not an image") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error):
            raise Rejected("undecodable") from None
