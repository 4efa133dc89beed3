"""The end of a run: per-class counts checked against what the labels promise, and the summary table."""
from collections import Counter

SHOWN = 10  # entries of each list printed; the manifest has them all


def count_problems(expected, manifest, rejects):
    """One line per class whose written + rejected images differ from the count the labels give.

    `expected` maps split -> Counter of WNIDs, a total (an int: a source that promises only that), or None where
    nothing gives counts."""
    problems = []
    for split, promised in expected.items():
        if promised is None:
            continue
        if isinstance(promised, int):
            problems += _total_problem(split, manifest, rejects, promised)
            continue
        written = Counter(dict(zip(manifest["classes"], manifest["splits"][split]["per_class"])))
        rejected = Counter(r["wnid"] for r in rejects if r["split"] == split and r["wnid"])
        for wnid in sorted(set(promised) | set(+written) | set(+rejected)):
            if written[wnid] + rejected[wnid] != promised[wnid]:
                problems.append(f"{split} {wnid}: {written[wnid]} written + {rejected[wnid]} rejected, "
                                f"the labels list {promised[wnid]}")
    return problems


def _total_problem(split, manifest, rejects, promised):
    written = manifest["splits"][split]["samples"]
    rejected = sum(1 for r in rejects if r["split"] == split)
    if written + rejected == promised:
        return []
    return [f"{split}: {written} written + {rejected} rejected, the full set holds {promised}"]


def summary(expected, manifest, seconds, problems, folder_bytes):
    """The table of what was written and the lists behind it; `folder_bytes` maps split -> bytes of the images
    written into the folder layout."""
    written, sizes = _written(manifest, folder_bytes)
    rows = [("split", "images", "expected", "rejected", "re-encoded", written, "MB")]
    for split, entry in manifest["splits"].items():
        promised = expected[split]
        count, size = sizes[split]
        rows.append((split, entry["samples"], _promised(promised),
                     _count(manifest["rejected"], split), _count(manifest["reencoded"], split),
                     count, f"{size / 1e6:.1f}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in rows]
    images = sum(entry["samples"] for entry in manifest["splits"].values())
    lines.append(f"{images} images in {seconds:.1f} s ({images / max(seconds, 1e-9):.0f} img/s), "
                 f"{len(manifest['classes'])} classes, source: {manifest['source']['kind']}")
    lines += _listing("re-encoded", manifest["reencoded"], lambda e: f"{e['split']} {e['key']}: {e['reason']}")
    lines += _listing("rejected", manifest["rejected"], lambda e: f"{e['split']} {e['key']}: {e['reason']}")
    lines += _listing("unsafe members skipped", manifest["unsafe"],
                      lambda e: f"{e['source']}: {e['member']!r}: {e['reason']}")
    lines += _listing("count mismatches", problems, str)
    lines.append("counts match the labels" if not problems else "COUNTS DO NOT MATCH THE LABELS")
    return "\n".join(lines)


def _promised(promised):
    if promised is None:
        return "-"
    return promised if isinstance(promised, int) else sum(promised.values())


def _written(manifest, folder_bytes):
    """What the table counts as written, and per split (how many, bytes): the shards, or the class folders where
    the layout writes no shards."""
    if manifest["options"]["layout"] == "folders":
        return "folders", {split: (len(manifest["classes"]), folder_bytes[split]) for split in manifest["splits"]}
    return "shards", {split: (len(entry["shards"]), sum(shard["bytes"] for shard in entry["shards"]))
                      for split, entry in manifest["splits"].items()}


def _count(entries, split):
    return sum(1 for e in entries if e["split"] == split)


def _listing(title, entries, describe):
    if not entries:
        return []
    lines = [f"{title} ({len(entries)}):"] + [f"  {describe(e)}" for e in entries[:SHOWN]]
    if len(entries) > SHOWN:
        lines.append(f"  ... {len(entries) - SHOWN} more in manifest.json")
    return lines
