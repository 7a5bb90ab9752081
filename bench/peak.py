"""Peak resident memory of this process per benchmark row (Linux): the kernel's high-water mark
(VmHWM) is reset before a row and read after it, so each row reports the peak of its own work
(including what the process already held, such as the data and the framework)."""
import re


def reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def mib():
    """Peak resident set since the last reset, MiB; None where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None
