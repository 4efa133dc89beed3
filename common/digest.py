"""A file's hex digest, read in chunks: the manifest's sha256 of a shard, a listing's MD5 of an object."""
import hashlib

CHUNK = 1 << 22


def file_digest(path, algorithm="sha256", on_chunk=None):
    """The hex digest of the file at `path`; `on_chunk(n)` after each n bytes read (a progress bar's update)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if on_chunk:
                on_chunk(len(chunk))
    return digest.hexdigest()
