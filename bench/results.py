"""Where benchmark results go: JSON under bench/results/, stamped with the machine they were measured on."""
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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
        try:
            info["libraries"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return info


def device_tag(info):
    """Short file-name tag: the GPU if there is one, else the CPU and core count."""
    label = info["gpu"] or f"{info['cpu']}-{info['cores']}cores"
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").lower()


def save(suite, payload, out_dir=RESULTS_DIR):
    """Write {suite}-{device}.json atomically and return its path."""
    info = machine_info()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}-{device_tag(info)}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"suite": suite, "machine": info, **payload}, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
