"""Stored readings → the signed frame bytes they must have come from, to check many frames at once.

Owns: writing, from columns, the canonical wire bytes of frames (docs/wire-format.md: the frame on the
wire *is* its RFC 8785 form with ``sig``; keys sorted ``device, readings[channel, energy_wh, power_w,
ts_ms], sent_ms, seq, sig, site, v``), and comparing them with the stored raw bytes. A frame whose
rebuilt bytes equal its stored bytes has exactly the stored readings — none changed, missing or added —
so "every reading equals its signed frame" is one comparison per frame; only frames that differ need
the per-reading reference (decode and compare), which also names the readings. Pure: no I/O.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from ledger.bulk import StringTable, _put, _put_int

_K_DEVICE = np.frombuffer(b'{"device":', np.uint8)
_K_READINGS = np.frombuffer(b',"readings":[', np.uint8)
_K_CHANNEL = np.frombuffer(b'{"channel":', np.uint8)
_K_ENERGY = np.frombuffer(b',"energy_wh":', np.uint8)
_K_POWER = np.frombuffer(b',"power_w":', np.uint8)
_K_TS = np.frombuffer(b',"ts_ms":', np.uint8)
_K_SENT = np.frombuffer(b'],"sent_ms":', np.uint8)
_K_SEQ = np.frombuffer(b',"seq":', np.uint8)
_K_SIG = np.frombuffer(b',"sig":"', np.uint8)
_K_SITE = np.frombuffer(b'","site":', np.uint8)
_K_END = np.frombuffer(b',"v":1}', np.uint8)


@njit(cache=True, nogil=True)
def _write_frames(out, offs, first, dev, site, seq, sent, sig_buf, sig_off, sig_len, dev_buf, dev_off, site_buf,  # type: ignore[no-untyped-def]
                  site_off, ch_buf, ch_off, ch, e, p, ts, kd, kr, kc, ke, kp, kt, ks, kse, ksig, ksite, kend):
    tmp = np.empty(24, np.uint8)
    pos = 0
    for f in range(dev.size):
        offs[f] = pos
        pos = _put(out, pos, kd, 0, kd.size)
        pos = _put(out, pos, dev_buf, dev_off[dev[f]], dev_off[dev[f] + 1])
        pos = _put(out, pos, kr, 0, kr.size)
        for i in range(first[f], first[f + 1]):
            if i > first[f]:
                out[pos] = 44  # ','
                pos += 1
            pos = _put(out, pos, kc, 0, kc.size)
            pos = _put(out, pos, ch_buf, ch_off[ch[i]], ch_off[ch[i] + 1])
            pos = _put(out, pos, ke, 0, ke.size)
            pos = _put_int(out, pos, e[i], tmp)
            pos = _put(out, pos, kp, 0, kp.size)
            pos = _put_int(out, pos, p[i], tmp)
            pos = _put(out, pos, kt, 0, kt.size)
            pos = _put_int(out, pos, ts[i], tmp)
            out[pos] = 125  # '}'
            pos += 1
        pos = _put(out, pos, kse, 0, kse.size)
        pos = _put_int(out, pos, sent[f], tmp)
        pos = _put(out, pos, ks, 0, ks.size)
        pos = _put_int(out, pos, seq[f], tmp)
        pos = _put(out, pos, ksig, 0, ksig.size)
        pos = _put(out, pos, sig_buf, sig_off[f], sig_off[f] + sig_len[f])
        pos = _put(out, pos, ksite, 0, ksite.size)
        pos = _put(out, pos, site_buf, site_off[site[f]], site_off[site[f] + 1])
        pos = _put(out, pos, kend, 0, kend.size)
    offs[dev.size] = pos


def write_frames(devices: StringTable, sites: StringTable, channels: StringTable, dev: np.ndarray, site: np.ndarray,
                 seq: np.ndarray, sent_ms: np.ndarray, sig_buf: np.ndarray, sig_off: np.ndarray, sig_len: np.ndarray,
                 first: np.ndarray, ch: np.ndarray, energy_wh: np.ndarray, power_w: np.ndarray,
                 ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The canonical bytes of ``len(dev)`` frames: frame ``f`` holds readings ``first[f]:first[f + 1]``
    (in ``idx`` order). Returns (buffer, ``len(dev) + 1`` offsets)."""
    n_frames, n_readings = len(dev), len(ch)
    cap = (n_frames * (160 + devices.max_len() + sites.max_len()) + int(np.asarray(sig_len).sum())
           + n_readings * (70 + channels.max_len() + 3 * 21))
    out = np.empty(cap, np.uint8)
    offs = np.empty(n_frames + 1, np.int64)
    i64 = np.int64
    _write_frames(out, offs, np.ascontiguousarray(first, i64), np.ascontiguousarray(dev, i64),
                  np.ascontiguousarray(site, i64), np.ascontiguousarray(seq, i64), np.ascontiguousarray(sent_ms, i64),
                  sig_buf, np.ascontiguousarray(sig_off, i64), np.ascontiguousarray(sig_len, i64), devices.buf,
                  devices.off, sites.buf, sites.off, channels.buf, channels.off, np.ascontiguousarray(ch, i64),
                  np.ascontiguousarray(energy_wh, i64), np.ascontiguousarray(power_w, i64),
                  np.ascontiguousarray(ts_ms, i64), _K_DEVICE, _K_READINGS, _K_CHANNEL, _K_ENERGY, _K_POWER, _K_TS,
                  _K_SEQ, _K_SENT, _K_SIG, _K_SITE, _K_END)
    return out[:offs[-1]], offs


@njit(cache=True, nogil=True)
def _equal(a, a_off, b, b_off, b_len, out):  # type: ignore[no-untyped-def]
    for f in range(out.size):
        n = a_off[f + 1] - a_off[f]
        ok = n == b_len[f]
        if ok:
            x, y = a_off[f], b_off[f]
            for j in range(n):
                if a[x + j] != b[y + j]:
                    ok = False
                    break
        out[f] = ok


def equal_frames(built: np.ndarray, built_off: np.ndarray, raw: np.ndarray, raw_off: np.ndarray,
                 raw_len: np.ndarray) -> np.ndarray:
    """Per frame: are the rebuilt bytes exactly the stored ones?"""
    out = np.zeros(len(built_off) - 1, np.bool_)
    _equal(built, built_off, raw, np.ascontiguousarray(raw_off, np.int64), np.ascontiguousarray(raw_len, np.int64),
           out)
    return out


def rebuilt_equal(devices: StringTable, sites: StringTable, channels: StringTable, dev: np.ndarray, site: np.ndarray,
                  seq: np.ndarray, sent_ms: np.ndarray, sig_buf: np.ndarray, sig_off: np.ndarray, sig_len: np.ndarray,
                  first: np.ndarray, ch: np.ndarray, energy_wh: np.ndarray, power_w: np.ndarray, ts_ms: np.ndarray,
                  raw: np.ndarray, raw_off: np.ndarray, raw_len: np.ndarray, threads: int = 2) -> np.ndarray:
    """Per frame: does ``write_frames`` (same arguments) rebuild exactly the stored bytes ``raw[raw_off:+raw_len]``?
    The frames are split into ``threads`` spans, each rebuilt and compared on its own thread (the kernels release
    the GIL), with a buffer per span."""
    n = len(dev)
    out = np.zeros(n, np.bool_)
    first = np.ascontiguousarray(first, np.int64)

    def span(lo: int, hi: int) -> None:
        if hi <= lo:
            return
        f = first[lo:hi + 1]
        a, b = int(f[0]), int(f[-1])
        built, offs = write_frames(devices, sites, channels, dev[lo:hi], site[lo:hi], seq[lo:hi], sent_ms[lo:hi],
                                   sig_buf, sig_off[lo:hi], sig_len[lo:hi], f - a, ch[a:b], energy_wh[a:b],
                                   power_w[a:b], ts_ms[a:b])
        out[lo:hi] = equal_frames(built, offs, raw, raw_off[lo:hi], raw_len[lo:hi])

    cuts = [n * k // max(threads, 1) for k in range(max(threads, 1) + 1)]
    if threads <= 1 or n < 10_000:
        span(0, n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: span(cuts[k], cuts[k + 1]), range(threads)))
    return out
