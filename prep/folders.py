"""The DeepLearningExamples folder layout: its images, <split>/<wnid>/<key>.JPEG (written by the shard tasks), and
its lists: train_list.txt, val_list.txt, val_map.txt, valprep.sh.
"""
from pathlib import Path

from common.atomic import write_atomically
from common.layout import LISTS, VAL_MAP, VALPREP, list_line

VALPREP_HEAD = """#!/bin/sh
# Sorts a flat ILSVRC2012 val/ folder (ILSVRC2012_val_*.JPEG) into val/<wnid>/ folders: run it inside val/.
set -e
"""


def make_dirs(out, splits, classes):
    for split in splits:
        for wnid in classes:
            Path(out, split, wnid).mkdir(parents=True, exist_ok=True)


def write_image(out, split, wnid, key, data):
    """<out>/<split>/<wnid>/<key>.JPEG, in a folder make_dirs made; `wnid` and `key` are plain names (prep's sources
    validate them). Returns the bytes written."""
    write_atomically(Path(out, split, wnid, f"{key}.JPEG"), data)
    return len(data)


def write_lists(out, classes, records):
    """`records` maps split -> ShardRecords."""
    for split, split_records in records.items():
        kept = sorted((classes[k.label], k.key, k.label) for r in split_records for k in r.kept)
        listing = "".join(list_line(f"{wnid}/{key}.JPEG", label) for wnid, key, label in kept)
        write_atomically(Path(out, LISTS[split]), listing)
        if split == "val":
            by_key = sorted((key, wnid) for wnid, key, _ in kept)
            write_atomically(Path(out, VAL_MAP), "".join(f"{key}.JPEG {wnid}\n" for key, wnid in by_key))
            script = VALPREP_HEAD + "".join(f"mkdir -p {wnid}\n" for wnid in sorted({w for _, w in by_key}))
            script += "".join(f"mv {key}.JPEG {wnid}/\n" for key, wnid in by_key)
            write_atomically(Path(out, VALPREP), script, mode=0o755)
