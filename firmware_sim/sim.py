"""The simulated fleet: sites, devices, their readings, injected faults, and the signed frames.

Owns: ``simulate(...) -> SimRun`` — a deterministic (for a seed) fleet of sites, each with a main
meter (``import``/``export``), two sub-meters (``import``: HVAC, everything else) and a PV
inverter (``pv``); per-device reading arrays from ``profiles``; faults applied from a scenario
with their ground truth; and the frames, encoded and signed lazily in publish order.

    run = simulate(sites=2, days=1, seed=7, scenario=load_scenario("scenarios/greenwash.yaml"))
    run.devices            # list[SimDevice]: DeviceRecord + Ed25519 key + role
    for msg in run.messages():   # Message(topic, payload, device, seq, n_readings, ts_ms)
        ...
    run.truth              # list[TruthRecord] (complete before the first message is made)
    run.weather_rows()     # hourly (site, iso time, temperature_c)

Device keys are derived from the seed so a seed fixes every byte (``sent_ms`` aside, which comes
from ``clock``; pass one for byte-identical runs). They are simulation keys: real devices get
theirs from ``wattproof device provision``.
Must not: publish (publisher.py does) or know the database or the ledger.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.identity import DeviceRecord, public_key_b64
from device.wire import (
    WIRE_VERSION,
    Frame,
    Reading,
    b64url,
    canonical_bytes,
    encode_frame,
    readings_topic,
    sign_frame,
)
from firmware_sim import profiles
from firmware_sim.scenarios import EXPECT, FaultSpec, Scenario, ScenarioError

ROLES = ("main", "sub1", "sub2", "pv")
KIND_OF_ROLE = {"main": "main_meter", "sub1": "sub_meter", "sub2": "sub_meter", "pv": "pv_inverter"}


class TruthRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth of one injected fault (one line of truth.jsonl)."""

    site: str
    device: str
    kind: str
    start_ms: int
    end_ms: int
    expect: str
    seqs: list[int] = []
    n_readings: int = 0


class Message(NamedTuple):
    topic: str
    payload: bytes
    device: str
    seq: int | None  # the device's seq this message claims (None for malformed payloads)
    n_readings: int
    ts_ms: int  # first reading's time (publish order)


@dataclass(frozen=True)
class SimDevice:
    record: DeviceRecord
    key: Ed25519PrivateKey
    role: str

    @property
    def device(self) -> str:
        return self.record.device


@dataclass
class _Channel:
    name: str
    power_w: np.ndarray  # float W per grid step
    energy_wh: np.ndarray  # int64 cumulative register


@dataclass
class _DevicePlan:
    dev: SimDevice
    channels: list[_Channel]
    ts_ms: np.ndarray  # reported timestamps (clock faults shift them)
    present: np.ndarray  # bool mask (gaps remove readings)
    sent_offset_ms: np.ndarray  # device clock error at each step
    frames: list[np.ndarray] = field(default_factory=list)  # index chunks, one per real frame
    seq0: int = 1
    # extra messages keyed by the frame number they precede (<0: after) → list of callables
    inject_before: dict[int, list[Callable[[int], list[Message]]]] = field(default_factory=dict)
    inject_after: dict[int, list[Callable[[int], list[Message]]]] = field(default_factory=dict)
    skewed: dict[int, int] = field(default_factory=dict)  # frame number → extra clock offset ms


def derive_key(seed: int, device: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"wattproof-sim/{seed}/{device}".encode()).digest())


def build_sites(n: int, seed: int) -> list[profiles.SiteModel]:
    rng = np.random.default_rng([seed, 1])
    sites = []
    for i in range(n):
        commercial = i % 3 == 2
        sites.append(profiles.SiteModel(
            site=f"s{i + 1:02d}",
            kind="commercial" if commercial else "household",
            lat=round(float(rng.uniform(36.0, 58.0)), 4),
            lon=round(float(rng.uniform(-6.0, 20.0)), 4),
            annual_kwh=float(rng.uniform(60_000, 150_000) if commercial else rng.uniform(2_500, 5_500)),
            pv_kwp=round(float(rng.uniform(20, 60) if commercial else rng.uniform(3, 8)), 1),
        ))
    return sites


@dataclass
class SimRun:
    sites: list[profiles.SiteModel]
    devices: list[SimDevice]
    truth: list[TruthRecord]
    interval_s: int
    frame_readings: int
    start_ms: int
    end_ms: int
    _plans: list[_DevicePlan]
    _temps: dict[str, tuple[np.ndarray, np.ndarray]]
    _clock: Callable[[], int]

    def messages(self) -> Iterator[Message]:
        """Every message in publish order (by first reading time across devices)."""
        streams = [_device_messages(p, self._clock) for p in self._plans]
        return heapq.merge(*streams, key=lambda m: m.ts_ms)

    def weather_rows(self) -> Iterator[tuple[str, str, float]]:
        for site, (ts, temp) in self._temps.items():
            hours = (ts // 3_600_000) * 3_600_000
            for h in np.unique(hours):
                mean = float(temp[hours == h].mean())
                iso = np.datetime_as_string(np.datetime64(int(h), "ms"), unit="s") + "Z"
                yield site, iso, round(mean, 2)

    @property
    def n_readings(self) -> int:
        return sum(int(p.present.sum()) * len(p.channels) for p in self._plans)


def simulate(sites: int = 3, days: float = 7.0, seed: int = 42, scenario: Scenario | None = None,
             start_ms: int | None = None, interval_s: int = 60, frame_readings: int = 15,
             clock: Callable[[], int] | None = None, keys: dict[str, Ed25519PrivateKey] | None = None,
             seq_start: dict[str, int] | None = None) -> SimRun:
    """Build a fleet and plan its frames. ``scenario`` fields override the keyword defaults."""
    if scenario is not None:
        sites, days, seed = scenario.sites, scenario.days, scenario.seed
        interval_s, frame_readings = scenario.interval_s, scenario.frame_readings
        if scenario.start and start_ms is None:
            start_ms = int(np.datetime64(scenario.start, "ms").astype(np.int64))
    step_ms = interval_s * 1000
    n_steps = int(days * 86_400 // interval_s)
    if start_ms is None:
        now = int(time.time() * 1000)
        start_ms = now - n_steps * step_ms
    start_ms -= start_ms % step_ms
    ts = start_ms + np.arange(n_steps, dtype=np.int64) * step_ms
    clock = clock or (lambda: int(time.time() * 1000))

    models = build_sites(sites, seed)
    plans: list[_DevicePlan] = []
    temps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_site_role: dict[tuple[int, str], _DevicePlan] = {}
    clear_sky: dict[str, np.ndarray] = {}
    for si, model in enumerate(models):
        rng = np.random.default_rng([seed, 2, si])
        temp = profiles.temperature_c(ts, model.lat, rng)
        temps[model.site] = (ts, temp)
        hvac, other = profiles.load_w(model, ts, temp, rng)
        clear = profiles.clear_sky_pv_w(model, ts)
        clear_sky[model.site] = clear
        pv = clear * profiles.cloud_factor(ts, rng)
        net = hvac + other - pv
        peak = float(np.max(hvac + other)) if n_steps else 1.0
        powers = {
            "main": [("import", np.maximum(net, 0)), ("export", np.maximum(-net, 0))],
            "sub1": [("import", hvac)],
            "sub2": [("import", other)],
            "pv": [("pv", pv)],
        }
        ratings = {"main": peak * 1.5, "sub1": max(float(hvac.max()) * 1.5, 500.0),
                   "sub2": max(float(other.max()) * 1.5, 500.0), "pv": model.pv_kwp * 1000}
        for role in ROLES:
            device_id = f"{model.site}-{role}"
            key = (keys or {}).get(device_id) or derive_key(seed, device_id)
            record = DeviceRecord(site=model.site, device=device_id, kind=KIND_OF_ROLE[role],  # type: ignore[arg-type]
                                  public_key=public_key_b64(key), rated_power_w=max(int(ratings[role]), 1),
                                  lat=model.lat, lon=model.lon)
            chans = []
            for ci, (name, p) in enumerate(powers[role]):
                reg0 = int(np.random.default_rng([seed, 3, si, ROLES.index(role), ci]).integers(1_000, 5_000_000))
                chans.append(_Channel(name, p.astype(float).copy(), profiles.integrate_register_wh(p, interval_s, reg0)))
            plan = _DevicePlan(SimDevice(record, key, role), chans, ts.copy(), np.ones(n_steps, bool),
                               np.zeros(n_steps, np.int64), seq0=(seq_start or {}).get(device_id, 1))
            plans.append(plan)
            by_site_role[(si, role)] = plan

    truth: list[TruthRecord] = []
    frame_faults: list[tuple[FaultSpec, _DevicePlan]] = []
    for spec in (scenario.faults if scenario else []):
        if spec.site >= len(models):
            raise ScenarioError(f"fault {spec.kind}: site index {spec.site} but the fleet has {len(models)} sites")
        if spec.start_h * 3600 >= n_steps * interval_s:
            raise ScenarioError(f"fault {spec.kind} at start_h={spec.start_h} is after the simulated period "
                                f"({n_steps * interval_s / 3600:g} h)")
        plan = by_site_role[(spec.site, spec.device)]
        i0 = min(int(spec.start_h * 3600 // interval_s), max(n_steps - 1, 0))
        i1 = min(max(i0 + 1, int((spec.start_h + spec.duration_h) * 3600 // interval_s)), n_steps)
        if spec.kind in _ARRAY_FAULTS:
            s_ms, e_ms = _ARRAY_FAULTS[spec.kind](plan, spec, i0, i1, interval_s, clear_sky[plan.dev.record.site])
            truth.append(TruthRecord(site=plan.dev.record.site, device=plan.dev.device, kind=spec.kind,
                                     start_ms=s_ms, end_ms=e_ms, expect=EXPECT[spec.kind]))
        else:
            frame_faults.append((spec, plan))

    for plan in plans:  # chunk present readings into frames
        idx = np.flatnonzero(plan.present)
        plan.frames = [idx[k:k + frame_readings] for k in range(0, len(idx), frame_readings)]
    devices_by_id = {p.dev.device: p for p in plans}
    for spec, plan in frame_faults:
        truth.append(_plan_frame_fault(spec, plan, devices_by_id, by_site_role, interval_s))

    return SimRun(models, [p.dev for p in plans], truth, interval_s, frame_readings, int(start_ms),
                  int(start_ms + n_steps * step_ms), plans, temps, clock)


# --- faults applied to the reading arrays ------------------------------------------------


def _reintegrate(ch: _Channel, i0: int, interval_s: int) -> None:
    base = int(ch.energy_wh[i0 - 1]) if i0 > 0 else int(ch.energy_wh[0])
    ch.energy_wh[i0:] = profiles.integrate_register_wh(ch.power_w[i0:], interval_s, base)


def _window_ms(plan: _DevicePlan, i0: int, i1: int, interval_s: int) -> tuple[int, int]:
    return int(plan.ts_ms[i0]), int(plan.ts_ms[i1 - 1]) + interval_s * 1000


def _rollback(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    delta = spec.delta_wh or max(1000, int(ch.energy_wh[i0] * 0.1))
    ch.energy_wh[i0:] = np.maximum(ch.energy_wh[i0:] - delta, 0)
    return _window_ms(plan, i0, i0 + 1, interval_s)


def _stuck(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    frozen = int(ch.energy_wh[i0 - 1]) if i0 > 0 else int(ch.energy_wh[0])
    lost = int(ch.energy_wh[i1 - 1]) - frozen
    ch.energy_wh[i0:i1] = frozen
    ch.energy_wh[i1:] -= lost  # the register resumes counting from where it stuck
    if not np.any(ch.power_w[i0:i1] > 0):  # "stuck while power says energy flows"
        ch.power_w[i0:i1] = max(float(np.median(ch.power_w)), 50.0)
    return _window_ms(plan, i0, i1, interval_s)


def _gap(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    plan.present[i0:i1] = False
    return _window_ms(plan, i0, i1, interval_s)


def _spike(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    ch.power_w[i0] = max(ch.power_w[i0], float(np.median(ch.power_w)), 100.0) * (spec.factor or 8.0)
    return _window_ms(plan, i0, i0 + 1, interval_s)


def _over_rating(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    ch.power_w[i0:i1] = plan.dev.record.rated_power_w * (spec.factor or 1.4)
    _reintegrate(ch, i0, interval_s)
    return _window_ms(plan, i0, i1, interval_s)


def _pv_at_night(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    night = clear[i0:i1] <= 0
    ch.power_w[i0:i1] = np.where(night, plan.dev.record.rated_power_w * 0.2, ch.power_w[i0:i1])
    _reintegrate(ch, i0, interval_s)
    return _window_ms(plan, i0, i1, interval_s)


def _pv_inflated(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    ch = plan.channels[0]
    ch.power_w[i0:i1] = np.maximum(ch.power_w[i0:i1], clear[i0:i1] * (spec.factor or 1.6))
    _reintegrate(ch, i0, interval_s)
    return _window_ms(plan, i0, i1, interval_s)


def _clock_drift(plan, spec, i0, i1, interval_s, clear):  # type: ignore[no-untyped-def]
    drift_ms = np.linspace(0, (spec.offset_s or 240.0) * 1000, i1 - i0).astype(np.int64)
    plan.ts_ms[i0:i1] += drift_ms
    plan.sent_offset_ms[i0:i1] += drift_ms
    return _window_ms(plan, i0, i1, interval_s)


_ARRAY_FAULTS = {
    "register_rollback": _rollback, "stuck_register": _stuck, "gap": _gap, "spike": _spike,
    "over_rating": _over_rating, "pv_at_night": _pv_at_night, "pv_inflated": _pv_inflated,
    "clock_drift": _clock_drift,
}


# --- faults that add or alter whole messages -----------------------------------------------


def _frame_no_at(plan: _DevicePlan, i0: int) -> int:
    for n, chunk in enumerate(plan.frames):
        if len(chunk) and chunk[-1] >= i0:
            return n
    return max(len(plan.frames) - 1, 0)


def _plan_frame_fault(spec: FaultSpec, plan: _DevicePlan, devices: dict[str, _DevicePlan],
                      by_site_role: dict[tuple[int, str], _DevicePlan], interval_s: int) -> TruthRecord:
    i0 = int(spec.start_h * 3600 // interval_s)
    n = _frame_no_at(plan, i0)
    chunk = plan.frames[n]
    n_read = len(chunk) * len(plan.channels)
    site, dev = plan.dev.record.site, plan.dev.device
    s_ms, e_ms = int(plan.ts_ms[chunk[0]]), int(plan.ts_ms[chunk[-1]]) + interval_s * 1000
    seq = plan.seq0 + n
    kind = spec.kind

    def rec(device: str = dev, seqs: list[int] | None = None, n_readings: int = n_read) -> TruthRecord:
        return TruthRecord(site=site, device=device, kind=kind, start_ms=s_ms, end_ms=e_ms,
                           expect=EXPECT[kind], seqs=seqs if seqs is not None else [seq], n_readings=n_readings)

    if kind == "duplicate_frame":
        plan.inject_after.setdefault(n, []).append(lambda sent: [_encode(plan, n, sent)])
        return rec()
    if kind == "clock_skew":
        plan.skewed[n] = int((spec.offset_s or 3 * 3600.0) * 1000)
        return rec()
    if kind == "replayed_frame":
        old = max(n - 3, 0)
        old_chunk = plan.frames[old]
        plan.inject_after.setdefault(n, []).append(lambda sent: [_encode(plan, old, sent, register_delta=-100)])
        return TruthRecord(site=site, device=dev, kind=kind, start_ms=int(plan.ts_ms[old_chunk[0]]),
                           end_ms=int(plan.ts_ms[old_chunk[-1]]) + interval_s * 1000, expect=EXPECT[kind],
                           seqs=[plan.seq0 + old], n_readings=len(old_chunk) * len(plan.channels))
    if kind == "forged_signature":
        plan.inject_before.setdefault(n, []).append(lambda sent: [_encode(plan, n, sent, register_delta=+500, forge=True)])
        return rec()
    if kind == "impersonation":
        # The main meter's key signs a frame that claims to be this site's PV inverter, on its topic.
        site_idx = spec.site
        victim = by_site_role[(site_idx, "pv")] if plan.dev.role != "pv" else by_site_role[(site_idx, "main")]
        attacker = plan

        def impersonate(sent: int) -> list[Message]:
            return [_encode(victim, min(n, len(victim.frames) - 1), sent, register_delta=+2000, signer=attacker.dev.key)]

        plan.inject_before.setdefault(n, []).append(impersonate)
        vchunk = victim.frames[min(n, len(victim.frames) - 1)]
        return TruthRecord(site=site, device=victim.dev.device, kind=kind, start_ms=s_ms, end_ms=e_ms,
                           expect=EXPECT[kind], seqs=[victim.seq0 + min(n, len(victim.frames) - 1)],
                           n_readings=len(vchunk) * len(victim.channels))
    if kind in ("malformed_json", "malformed_schema"):
        def malformed(sent: int) -> list[Message]:
            good = _encode(plan, n, sent)
            if kind == "malformed_json":
                payload = good.payload[: len(good.payload) // 2]
            else:
                obj = msgspec.json.decode(good.payload)
                del obj["seq"]
                payload = msgspec.json.encode(obj)
            return [good._replace(payload=payload, seq=None)]

        plan.inject_before.setdefault(n, []).append(malformed)
        return rec(seqs=[])
    raise AssertionError(f"unhandled fault kind {kind}")


def _encode(plan: _DevicePlan, n: int, sent_ms: int, register_delta: int = 0, forge: bool = False,
            signer: Ed25519PrivateKey | None = None) -> Message:
    chunk = plan.frames[n]
    skew = plan.skewed.get(n, 0)
    ts = plan.ts_ms[chunk] + skew
    readings = []
    cols = [(ch.name, ch.energy_wh[chunk], np.rint(ch.power_w[chunk]).astype(np.int64)) for ch in plan.channels]
    for k in range(len(chunk)):
        t = int(ts[k])
        for name, reg, pw in cols:
            readings.append(Reading(ts_ms=t, channel=name, energy_wh=max(int(reg[k]) + register_delta, 0),  # type: ignore[arg-type]
                                    power_w=int(pw[k])))
    rec = plan.dev.record
    frame = Frame(v=WIRE_VERSION, site=rec.site, device=rec.device, seq=plan.seq0 + n,
                  sent_ms=int(sent_ms + plan.sent_offset_ms[chunk[-1]] + skew), readings=readings)
    if forge:
        frame = msgspec.structs.replace(frame, sig=b64url(hashlib.sha512(canonical_bytes(frame)).digest()))
    else:
        frame = sign_frame(frame, signer or plan.dev.key)
    return Message(readings_topic(rec.site, rec.device), encode_frame(frame), rec.device,
                   frame.seq, len(readings), int(plan.ts_ms[chunk[0]]))


def _device_messages(plan: _DevicePlan, clock: Callable[[], int]) -> Iterator[Message]:
    for n in range(len(plan.frames)):
        sent = clock()
        for make in plan.inject_before.get(n, []):
            yield from make(sent)
        yield _encode(plan, n, sent)
        for make in plan.inject_after.get(n, []):
            yield from make(sent)
