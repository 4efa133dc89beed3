"""Find the inputs under --src and list every image in them (where its bytes lie, its class) without reading one.

Each way ILSVRC2012 can lie under --src is a Source (prep.sources.base): the archives as downloaded, read in
place (prep.sources.archives); an extracted tree and Kaggle's (prep.sources.trees); the Hugging Face Hub's parquet
files (prep.sources.parquet) and timm's WebDataset shards (prep.sources.wds), as a local snapshot or at an hf:// URL
(prep.sources.hub). `open_source` picks the first row of LAYOUTS that recognises --src. A new layout is one Source
subclass and its row; the label files it may carry are prep.sources.labels' (a new kind of label file is one Labels
subclass and its place in LABEL_FILES).
"""
from pathlib import Path

from prep.sources.archives import Archives
from prep.sources.base import Listing, Sample, Source, SourceError, label_mismatch, stray_sample
from prep.sources.hub import is_url
from prep.sources.parquet import HubParquet
from prep.sources.trees import Extracted, Kaggle
from prep.sources.wds import HubWebDataset

# Tried in this order: the archives win over anything extracted beside them, Kaggle's tree, recognised by a
# deeper path, over a plain tree's train/ or val/, and the Hub's files (named by their split) over a folder train/.
LAYOUTS = (Archives, Kaggle, HubParquet, HubWebDataset, Extracted)
URL_LAYOUTS = (HubParquet, HubWebDataset)  # the layouts an hf:// --src may hold

__all__ = ["LAYOUTS", "Listing", "Sample", "Source", "SourceError", "label_mismatch", "open_source", "stray_sample"]


def open_source(src, splits, scratch, cap):
    """The Source reading `src`, after checking that every file the requested splits need is there.

    `scratch` is where a .tar.gz is decompressed to, a parquet spooled, a URL's shard fetched; no archive member or
    label file may exceed `cap` bytes."""
    if is_url(src):
        layout = next((layout for layout in URL_LAYOUTS if layout.recognises(src)), None)
        if layout is None:
            raise SourceError(f"--src {src}: nothing recognised; {_expected(URL_LAYOUTS)}")
        return layout(src, splits, scratch, cap)
    root = Path(src)
    if not root.is_dir():
        raise SourceError(f"--src {src}: not a directory; {_expected()}")
    layout = next((layout for layout in LAYOUTS if layout.recognises(root)), None)
    if layout is None:
        raise SourceError(f"--src {src}: nothing recognised; {_expected()}")
    return layout(root, splits, scratch, cap)


def _expected(layouts=LAYOUTS):
    *first, last = (layout.looks_like for layout in layouts)
    return f"expected {', '.join(first)}, or {last}"
