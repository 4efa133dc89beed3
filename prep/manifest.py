"""manifest.json: assembled from the shard records once every shard is done.

Nothing in it depends on timing, worker count or completion order, so a resumed run writes the same bytes.
"""
import json
from pathlib import Path

from common.atomic import write_atomically
from common.layout import FORMAT, MANIFEST, SPLITS, VERSION


def build(kind, src, options, classes, records, scan_rejects, unsafe):
    """The manifest dict; `records` maps split -> ShardRecords in shard order."""
    splits = {split: _split(len(classes), split_records) for split, split_records in records.items()}
    everything = [r for split_records in records.values() for r in split_records]
    return {
        "format": FORMAT, "version": VERSION,
        "source": {"kind": kind, "path": str(src)},
        "options": options,
        "classes": classes,
        "splits": splits,
        "reencoded": _in_order(entry for r in everything for entry in r.reencoded),
        "rejected": _in_order(public(entry) for entry in scan_rejects + [e for r in everything for e in r.rejected]),
        "unsafe": unsafe,
    }


def _split(num_classes, records):
    per_class = [0] * num_classes
    for record in records:
        for kept in record.kept:
            per_class[kept.label] += 1
    shards = [{"name": f"{r.name}.tar", "index": r.index, "samples": len(r.kept), "bytes": r.bytes, "sha256": r.sha256}
              for r in records if r.bytes is not None]
    return {"samples": sum(per_class), "per_class": per_class, "shards": shards}


def public(entry):
    """A reject as the manifest lists it (the class it would have had is for the count check only)."""
    return {key: entry[key] for key in ("split", "key", "source", "reason")}


def _in_order(entries):
    return sorted(entries, key=lambda e: (SPLITS.index(e["split"]), e["key"], e["source"]))


def write(out, manifest):
    write_atomically(Path(out, MANIFEST), json.dumps(manifest, indent=1) + "\n")
