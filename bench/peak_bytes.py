"""The peak bytes a folder holds while something runs: `bench loaders --remote` and the tests watch the node-local
cache's shards/ folder with it, which holds complete copies and copies being written."""
import contextlib
import threading


class DirectoryBytes:
    """The most bytes the files of a folder held (`peak`), sampled about every millisecond by a thread while entered
    (`samples` times)."""

    def __init__(self, folder):
        self.folder = folder
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._bytes())
            self.samples += 1

    def _bytes(self):
        total = 0
        for path in self.folder.glob("*") if self.folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):  # evicted or renamed since the listing
                total += path.stat().st_size
        return total
