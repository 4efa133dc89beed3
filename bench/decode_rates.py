"""Single-core JPEG decode rates of a prep output's first train images (libjpeg-turbo in full and DCT-scaled,
Pillow): what `bench loaders` prints to read its loader figures against."""
import io
import time

import PIL

from pipeline import dataset
from pipeline.readers import open_reader

SAMPLES = 100


def decode_rates(data_path, repeats=3):
    """Single-core images/s decoding the first SAMPLES train JPEGs each way; the best of `repeats` interleaved
    passes, as timeit does, since other load only ever slows a pass down."""
    import simplejpeg

    reader = open_reader(dataset.open_dataset(data_path).split("train"))
    jpegs = [bytes(reader.read(i)[0]) for i in range(min(SAMPLES, len(reader)))]
    sizes = [simplejpeg.decode_jpeg_header(data)[:2] for data in jpegs]  # read before the clock starts
    ways = _decoders()
    rates = dict.fromkeys(ways, 0.0)
    for _ in range(repeats):
        for name, decode in ways.items():
            start = time.perf_counter()
            for data, (height, width) in zip(jpegs, sizes):
                decode(data, height, width)
            rates[name] = max(rates[name], len(jpegs) / (time.perf_counter() - start))
    return rates


def _decoders():
    """{way: decode(jpeg, height, width)}: libjpeg-turbo in full (accurate and fast IDCT) and DCT-scaled to 1/2 and
    1/4 of each side, and Pillow in full."""
    import simplejpeg
    from PIL import Image

    def scaled(data, height, width, factor):
        return simplejpeg.decode_jpeg(data, "RGB", fastdct=True, min_height=-(-height // factor),
                                      min_width=-(-width // factor))

    return {
        "libjpeg-turbo full, accurate IDCT": lambda d, h, w: simplejpeg.decode_jpeg(d, "RGB"),
        "libjpeg-turbo full, fast IDCT": lambda d, h, w: scaled(d, h, w, 1),
        "libjpeg-turbo DCT-scaled 1/2": lambda d, h, w: scaled(d, h, w, 2),
        "libjpeg-turbo DCT-scaled 1/4": lambda d, h, w: scaled(d, h, w, 4),
        f"Pillow {PIL.__version__} full": lambda d, h, w: Image.open(io.BytesIO(d)).convert("RGB").load(),
    }
