"""Is the device clock disciplined? The kernel's answer, read with adjtimex(2) through ctypes.

Owns: ``kernel_clock()``: the kernel's NTP state (read-only ``adjtimex`` call, ``modes = 0``, allowed
to any user): synchronized when ``STA_UNSYNC`` is clear and the maximum error is under 16 s — the rule
systemd-timedated uses for ``timedatectl show -p NTPSynchronized`` — plus the kernel's maximum and
estimated error. Whatever disciplines the clock (systemd-timesyncd, chrony, ntpd) sets those fields.

The wire format (v1) has no field for clock state, and the agent does not change it: the agent takes no
sample while the clock is not synchronized (``require_sync``, counted in the metrics) and never lets a
reading's ``ts_ms`` go backwards; docs/agent.md, "Clock".
Must not: set the clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass

STA_UNSYNC = 0x0040
MAX_ERROR_SYNCED_US = 16_000_000  # systemd: NTPSynchronized = !(status & STA_UNSYNC) && maxerror < 16 s


@dataclass(frozen=True)
class ClockState:
    synchronized: bool
    max_error_us: int  # kernel's bound on the clock error (grows 500 ppm while nothing disciplines it)
    est_error_us: int
    source: str  # "adjtimex" or why it could not be read


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):  # struct timex, <sys/timex.h> (long fields: the native ABI of the libc symbol)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 16)]


def kernel_clock() -> ClockState:
    """The kernel's clock discipline state; ``synchronized=False`` where it cannot be read (not Linux)."""
    if not sys.platform.startswith("linux"):
        return ClockState(False, -1, -1, f"unavailable on {sys.platform}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    tx = _Timex()  # modes = 0: read only
    if libc.adjtimex(ctypes.byref(tx)) < 0:
        return ClockState(False, -1, -1, f"adjtimex failed (errno {ctypes.get_errno()})")
    synced = not (tx.status & STA_UNSYNC) and tx.maxerror < MAX_ERROR_SYNCED_US
    return ClockState(synced, int(tx.maxerror), int(tx.esterror), "adjtimex")
