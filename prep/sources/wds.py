"""WebDataset shards of ImageNet, read in place: timm's copy on the Hub (`imagenet1k-train-{0000..1023}.tar`,
`imagenet1k-validation-{00..63}.tar`, as `huggingface-cli download timm/imagenet-1k-wds --local-dir DIR` leaves them,
with its `_info.json`) or shards of the same kind: per sample `<key>.cls` (the label, ASCII decimal) and an image
`<key>.jpg`, other members (timm's `<key>.json`) ignored.

timm wrote its shards from TFDS's ImageNet with webdataset's TarWriter (members in sorted extension order: .cls,
.jpg, .json; keys the ILSVRC file stems; labels TFDS's, the sorted WNIDs' ranks), so labels are read as ImageNet-1k's
sorted-WNID ranks, and a key that names its WNID (every train key, `n01440764_10026`) is checked against its label.
The grouping of a tar's members into samples is also what `--adopt` reads (prep.adopt).
"""
import json
import os
import re
from functools import cached_property

from prep.progress import progress
from prep.sources.base import Container, Found, Source, SourceError
from prep.sources.hub import HUB_SPLITS, files_of, imagenet1k_wnids, split_stem
from prep.tario import scan

# webdataset's own split of a member name: the key is everything before the first dot of the file name
MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# the split a shard belongs to: a word of its name (imagenet1k-train-0000.tar) or its folder (train/0000.tar)
SPLIT_WORD = re.compile(r"(?:^|[-_.])(train|validation|val)(?:[-_.]|$)")
INFO_FILES = ("_info.json", "info.json")  # timm's description of the shards, where timm's reader looks for it
LABEL_BYTES = 16  # a .cls member larger than this is no class number


def split_of(name):
    """Our split of the shard `name` (a relative path), or None."""
    parts = name.split("/")
    if name.endswith(".tar") and not parts[-1].startswith("ILSVRC2012_img_"):
        for part in (parts[-1][: -len(".tar")], *reversed(parts[:-1])):
            word = SPLIT_WORD.search(part)
            if word:
                return HUB_SPLITS[word[1]]
    return None


def shards_by_split(names):
    """{our split: [shard names, sorted]} of the tars among `names`."""
    found = {}
    for name in sorted(names):
        split = split_of(name)
        if split:
            found.setdefault(split, []).append(name)
    return found


def group(members):
    """([(key, {extension: Member})] in tar order, [(key, problem)]): a tar's members as webdataset reads them, one
    sample per key, its members together."""
    samples, problems, seen = [], [], set()
    for member in members:
        match = MEMBER.match(member.name)
        if not match:
            problems.append((member.name, "a member without an extension"))
            continue
        key, extension = match.groups()
        if samples and samples[-1][0] == key:
            if extension in samples[-1][1]:
                problems.append((key, f"two .{extension} members"))
            samples[-1][1][extension] = member
            continue
        if key in seen:
            problems.append((key, "its members are not together (webdataset would read two samples)"))
        seen.add(key)
        samples.append((key, {extension: member}))
    return samples, problems


def image_of(parts):
    """(extension, Member) of the sample's image, or None."""
    return next(((ext, parts[ext]) for ext in IMAGE_EXTENSIONS if ext in parts), None)


def read_label(fd, member, classes):
    """The class number of a .cls member, or None when it is no number of a class in `classes`."""
    if member is None or member.size > LABEL_BYTES:
        return None
    text = os.pread(fd, member.size, member.offset).strip()
    return int(text) if text.isdigit() and int(text) < len(classes) else None


def label_problem(key, label, classes):
    """Why a sample's key, where it names a WNID (timm's train keys do), disagrees with its label; or None."""
    _, named = split_stem(key)
    if named is None or label is None or classes[label] == named:
        return None
    return (f"{key}.cls says {label} ({classes[label]}) but the key names {named}: the labels are not ImageNet-1k's "
            "sorted-WNID ranks; prep refuses to permute them silently")


class HubWebDataset(Source):
    kind = "hub-webdataset"
    looks_like = "WebDataset shards *-train-*.tar + *-validation-*.tar (timm/imagenet-1k-wds)"
    label_files = ()

    @staticmethod
    def recognises(root):
        return bool(shards_by_split(files_of(root).names()))

    def __init__(self, root, splits, scratch, cap):
        super().__init__(root, splits, scratch, cap)
        self.files = files_of(root)
        self.names = self.files.names()
        self.by_split = shards_by_split(self.names)
        for split in splits:
            if not self.by_split.get(split):
                raise SourceError(f"--src {root}: no *-{'validation' if split == 'val' else split}-*.tar shards "
                                  f"(needed for --splits {split})")

    def filed_by_class(self, split):
        return None

    def classes(self):
        return imagenet1k_wnids()

    def expected(self, split):
        return self._counts.get(split)

    def notes(self):
        return [f"{split}: {len(self.by_split[split])} shards without a count to check (no {INFO_FILES[0]} listing "
                "them all: a subset, or not timm's copy)" for split in self.splits if self.expected(split) is None]

    @cached_property
    def _counts(self):
        return timm_counts(self.files, self.names)

    def containers(self, split, mapper):
        names = self.by_split[split]
        count = len(names)
        found = mapper(tar_container, [self.files] * count, names, [self.scratch] * count, [self.classes()] * count)
        yield from progress(found, total=count, desc=f"index {split} shards", unit="tar", leave=False)


def timm_counts(files, names):
    """{our split: samples} that timm's _info.json gives each split whose every shard it lists is among `names`
    (relative names of `files`); {} without one. SourceError for one that is no such description."""
    info = next((name for name in INFO_FILES if name in names), None)
    if info is None:
        return {}
    try:
        with files.open(info) as f:
            splits = json.load(f)["splits"]
        counts = {HUB_SPLITS[hub]: entry for hub, entry in splits.items() if hub in HUB_SPLITS}
        return {split: entry["num_samples"] for split, entry in counts.items()
                if set(entry["filenames"]) <= set(names) and isinstance(entry["num_samples"], int)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise SourceError(f"{files.shown(info)}: not timm's shard description ({error})") from None


def tar_container(files, name, scratch, classes):
    """The Container of one shard (a worker task): its samples' images with the class their .cls gives."""
    path = files.local(name, scratch)
    members, unsafe = scan(path, name)
    samples, problems = group(members)
    unsafe += [{"source": name, "member": key, "reason": problem} for key, problem in problems]
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, parts in samples:
            image = image_of(parts)
            if image is None:
                unsafe.append({"source": name, "member": key, "reason": "no image member"})
                continue
            label = read_label(fd, parts.get("cls"), classes)
            problem = label_problem(key, label, classes)
            if problem:
                raise SourceError(f"{files.shown(name)}: {problem}")
            found.append(Found(f"{key.rsplit('/', 1)[-1]}.jpg", str(path), image[1].offset, image[1].size,
                               None if label is None else classes[label]))
    finally:
        os.close(fd)
    return Container(name, None, found, unsafe)
