"""Where benchmark results go: JSON (and a suite's PNG beside it), stamped with the machine they were measured on, in
the directory the user names with --results (default ./bench-results, in the working directory).

bench/results/ in the package holds the figures the README shows: the project's record, never a default. A
maintainer refreshes it on purpose, with --results bench/results."""
import contextlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from common.atomic import write_atomically
from common.cli import output_problem

DEFAULT_DIR = Path("bench-results")  # relative: in the working directory of the run
RECORD_DIR = Path(__file__).resolve().parent / "results"  # the README's figures, written only when named
LIBRARIES = ("torch", "torchvision", "nvidia-dali-cuda130", "webdataset", "simplejpeg",
             "opencv-python-headless", "pillow", "pillow-simd", "numpy")


def machine_info():
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "libraries": {},
    }
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["libraries"][name] = metadata.version(name)
    return info


def device_tag(info):
    """Short file-name tag: the GPU if there is one, else the CPU and core count."""
    label = info["gpu"] or f"{info['cpu']}-{info['cores']}cores"
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").lower()


def add_option(parser, *names):
    """The --results DIR option of a suite that saves results (`names`: further spellings of it)."""
    parser.add_argument("--results", *names, dest="results", type=Path, default=DEFAULT_DIR, metavar="DIR",
                        help=f"where the results go (made if missing; default: ./{DEFAULT_DIR}). The README's figures "
                             "are in bench/results: name that to refresh them")


def check_option(parser, args, named="--results"):
    """Stop in one line (exit status 2) before any work if --results cannot be an output directory."""
    parser.require(f"{named} {args.results}", output_problem(args.results))


def save(suite, payload, out_dir):
    """Write {suite}-{device}.json atomically into `out_dir` (made if missing) and return its path."""
    info = machine_info()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}-{device_tag(info)}.json"
    write_atomically(path, json.dumps({"suite": suite, "machine": info, **payload}, indent=1) + "\n")
    return path


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
