"""How much memory this process can still take, so a data set that would not fit is refused before it is read
instead of the kernel killing the process halfway through."""

from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo (Linux's estimate of what can be taken without swapping), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """What the memory limit of this process's control group (a container's, a SLURM job's) still allows."""
    groups = {"": "/"}  # cgroup v2 ("0::/path") or v1's memory controller ("4:memory:/path"), by controller
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            groups[controllers] = path
    except (OSError, ValueError):
        pass
    v2 = CGROUP / groups[""].lstrip("/")
    v1 = CGROUP / "memory" / groups.get("memory", "/").lstrip("/")
    for limit_file, used_file in ((v2 / "memory.max", v2 / "memory.current"),
                                  (v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes")):
        limit, used = _read_int(limit_file), _read_int(used_file)
        # v2 writes "max" for no limit, v1 a number near 2**63
        if limit is not None and used is not None and limit < 2**60:
            return max(0, limit - used)
    return None


def available_bytes() -> int | None:
    """Bytes of memory this process can still use: the host's available memory (psutil's figure where it is
    installed, else /proc/meminfo), or the control group's headroom where that is lower; None where neither
    can be read."""
    try:
        import psutil

        host = psutil.virtual_memory().available
    except ImportError:
        host = _meminfo_available()
    figures = [n for n in (host, _cgroup_headroom()) if n is not None]
    return min(figures) if figures else None
