"""What the machine this process runs on can still give it: memory, as the kernel and a container's limit see it."""
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# (limit, usage) files of this process's memory cgroup: v2's unified hierarchy, then v1's memory controller
CGROUP_FILES = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))


def available_memory():
    """Bytes that can still be allocated without swapping or the OOM killer: /proc/meminfo's MemAvailable, or less
    where a container's memory limit leaves less."""
    available = _meminfo("MemAvailable")
    room = _cgroup_room()
    return available if room is None else min(available, room)


def total_memory():
    return _meminfo("MemTotal")


def _meminfo(key):
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    raise OSError(f"/proc/meminfo has no {key}")


def _cgroup_room():
    """The bytes left under this cgroup's memory limit; None without a limit (or where it cannot be read)."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit = (CGROUP / limit_file).read_text().strip()
            usage = int((CGROUP / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**62:  # v2's "max", v1's page-rounded LONG_MAX: no limit
            return None
        return max(int(limit) - usage, 0)
    return None


def human_bytes(nbytes):
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
