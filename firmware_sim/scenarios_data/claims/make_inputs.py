"""Make the example claim inputs of scenarios/claims/ (deterministic; the outputs are committed).

    .venv/bin/python scenarios/claims/make_inputs.py            # write intensity, factors, registers
    .venv/bin/python scenarios/claims/make_inputs.py --figures  # and print the figures behind `expect:`

Writes: ``intensity.csv`` (region NL, every hour of 2026, an illustrative diurnal model — not real
grid data), ``factors.csv`` (illustrative supplier and residual-mix factors), and the certificate
registers ``clean.certificates.csv`` / ``greenwash.certificates.csv`` sized from the simulator's own
per-site energy (``firmware_sim.sim.simulate``, no store). ``--figures`` prints, per claim of the two
claim files, the measured figure by the methods as this script reads them (docs/claims.md ("The claim file and the inputs"),
"Example inputs"), so the ``expect:`` verdicts can be re-checked against the engine.
The claim files themselves are hand-written; their claimed figures come from this output.
"""

from __future__ import annotations

import argparse
import csv
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from audit.claims.certificates import (
    certificate_findings,
    hourly_certificate_supply,
    usable_certificates,
)
from audit.claims.inputs import (
    factor_for,
    iso_hour,
    read_certificates,
    read_factors,
    read_intensity,
)
from audit.claims.schema import load_claim_file
from firmware_sim.scenarios import load_scenario
from firmware_sim.sim import simulate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
H = 3_600_000
#: clean.yaml has no `start:` (it runs "the last 7 days"); its claims need a fixed week. The lead adds
#: `start: "2026-05-04"` to scenarios/clean.yaml; until then this script applies it.
CLEAN_START = "2026-05-04"
SCENARIOS = {"clean": CLEAN_START, "greenwash": None}


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


# --- grid intensity and factors ---------------------------------------------------------------


def intensity_rows(region: str = "NL", year: int = 2026, seed: int = 2026) -> list[tuple[str, str, float]]:
    """Hourly gCO2e/kWh: a seasonal base (higher in winter), a midday dip from solar (deeper in
    summer), an evening peak, and a slow random walk for wind; clipped to 180…480. Illustrative."""
    t0, t1 = ms(f"{year}-01-01T00:00:00"), ms(f"{year + 1}-01-01T00:00:00")
    t = np.arange(t0, t1, H, dtype=np.int64)
    doy = (t - t0) / 86_400_000
    hod = (t % 86_400_000) / H
    base = 385 + 30 * np.cos(2 * np.pi * (doy - 15) / 365)
    solar = (110 + 60 * np.cos(2 * np.pi * (doy - 172) / 365)) * np.exp(-0.5 * ((hod - 11.7) / 2.8) ** 2)
    evening = 25 * np.exp(-0.5 * ((hod - 18.0) / 1.5) ** 2)
    rng = np.random.default_rng(seed)
    wind = np.zeros(t.size)
    noise = rng.normal(0, 7.0, t.size)
    for i in range(1, t.size):
        wind[i] = 0.97 * wind[i - 1] + noise[i]
    g = np.clip(base - solar + evening + wind, 180, 480)
    return [(region, iso_hour(int(x)), round(float(v), 1)) for x, v in zip(t, g, strict=True)]


FACTORS = [  # kind, scope, period_start, period_end, gCO2e/kWh, source — ILLUSTRATIVE values
    ("residual", "NL", "2025-01-01", "2026-01-01", 555.0,
     "illustrative; order of magnitude of the AIB European Residual Mixes (NL) - not the published value"),
    ("residual", "NL", "2026-01-01", "2027-01-01", 540.0,
     "illustrative; order of magnitude of the AIB European Residual Mixes (NL) - not the published value"),
    ("supplier", "stadsstroom-nl", "2025-01-01", "2026-01-01", 205.0,
     "illustrative supplier fuel-mix disclosure (fictional supplier)"),
    ("supplier", "stadsstroom-nl", "2026-01-01", "2027-01-01", 190.0,
     "illustrative supplier fuel-mix disclosure (fictional supplier)"),
    ("supplier", "grijsstroom-nl", "2026-01-01", "2027-01-01", 415.0,
     "illustrative supplier fuel-mix disclosure (fictional supplier)"),
]


# --- the simulator's per-site hourly energy -----------------------------------------------------


def site_hours(name: str) -> tuple[int, dict[str, dict[str, np.ndarray]]]:
    """(start_ms, {site: {import, export, pv: Wh per hour}}) as the store's energy_hourly would show
    them: last register of each hour minus the previous hour's (hours without readings: NaN)."""
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    if SCENARIOS[name] and not sc.start:
        sc = msgspec.structs.replace(sc, start=SCENARIOS[name])
    run = simulate(scenario=sc)
    n = (run.end_ms - run.start_ms) // H
    out: dict[str, dict[str, np.ndarray]] = {}
    for plan in run._plans:  # noqa: SLF001 — sizing tool, reads the simulator's arrays directly
        rec = plan.dev.record
        hour = (plan.ts_ms[plan.present] - run.start_ms) // H
        for ch in plan.channels:
            if plan.dev.role not in ("main", "pv"):
                continue
            reg = ch.energy_wh[plan.present].astype(float)
            last = np.full(n, np.nan)
            ok = (hour >= 0) & (hour < n)
            np.fmax.at(last, hour[ok], reg[ok])
            prev = np.concatenate([[reg[0]], last[:-1]])
            filled = prev.copy()  # lag() skips hours without a bucket: energy lands in the next hour seen
            for i in range(1, n):
                if np.isnan(filled[i]):
                    filled[i] = filled[i - 1]
            out.setdefault(rec.site, {})[ch.name] = last - filled
    return run.start_ms, out


def metered_from(hours: dict[str, dict[str, np.ndarray]], start_ms: int):  # type: ignore[no-untyped-def]
    def metered(device: str, a: int, b: int) -> float | None:
        site, _, role = device.partition("-")
        if role != "pv" or site not in hours:
            return None
        pv = hours[site]["pv"]
        return float(np.nansum(pv[max(0, (a - start_ms) // H):max(0, (b - start_ms) // H)]))
    return metered


# --- certificate registers ---------------------------------------------------------------------

CERT_HEADER = ["cert_id", "mwh", "production_start", "production_end", "producer", "technology", "holder",
               "cancelled_for", "cancelled_period_start", "cancelled_period_end", "claim_ids"]


def _cert(cid: str, mwh: float, p: tuple[int, int], producer: str, tech: str, holder: str, org: str,
          c: tuple[int, int] | None, claims: str) -> list[str]:
    return [cid, f"{mwh:.3f}", iso_hour(p[0]), iso_hour(p[1]), producer, tech, holder, org,
            iso_hour(c[0]) if c else "", iso_hour(c[1]) if c else "", claims]


def clean_register(start: int, hours: dict[str, dict[str, np.ndarray]]) -> list[list[str]]:
    """Granular wind certificates (EnergyTag style) for 6-hour blocks of the week, each for half of
    the organisation's grid import in its block, cancelled for the same block: hourly-matchable."""
    imp = sum(np.nan_to_num(h["import"]) for h in hours.values())
    rows = []
    for b in range(imp.size // 6):
        a = start + b * 6 * H
        mwh = round(0.5 * float(imp[b * 6:(b + 1) * 6].sum()) / 1e6, 3)
        if mwh < 0.001:  # PV covered the block: nothing to buy
            continue
        day = iso_hour(a)[:10].replace("-", "")
        rows.append(_cert(f"GC-WD-{day}-{(b % 4) * 6:02d}", mwh, (a, a + 6 * H), "Windpark Delta (illustrative)", "wind",
                          "clean-coop", "clean-coop", (a, a + 6 * H), "c-share-annual;c-share-hourly;c-s2-market"))
    return rows


GW_ORG = "greenwash-holdings"
GW_PERIOD = (ms("2026-06-07T00:00:00"), ms("2026-06-08T00:00:00"))
GW_ALL = "gw-share-annual;gw-share-247;gw-s2-market"


def greenwash_register(start: int, hours: dict[str, dict[str, np.ndarray]]) -> list[list[str]]:
    p0, p1 = GW_PERIOD
    i0, i1 = (p0 - start) // H, (p1 - start) // H
    imp = float(sum(np.nansum(h["import"][i0:i1]) for h in hours.values())) / 1e6
    s03_pv = float(np.nansum(hours["s03"]["pv"][i0:i1])) / 1e6
    wind, rows = "Windpark Delta (illustrative)", []
    # 1. Wind produced in another week (18-25 May), cancelled for the period: 60 % of grid import.
    #    Valid for the volumetric figure, worth nothing hourly.
    w0 = ms("2026-05-18T00:00:00")
    for d in range(7):
        rows.append(_cert(f"GO-WD-202605-{d + 1:02d}", round(0.6 * imp / 7, 3), (w0 + d * 86_400_000, w0 + (d + 1) * 86_400_000),
                          wind, "wind", GW_ORG, GW_ORG, GW_PERIOD, GW_ALL))
    # 2. One wind certificate listed twice, for two claims (double counted; the org uses 2x its MWh).
    dbl = (ms("2026-05-20T00:00:00"), ms("2026-05-21T00:00:00"))
    rows.append(_cert("GO-WD-202605-99", round(0.25 * imp, 3), dbl, wind, "wind", GW_ORG, GW_ORG, GW_PERIOD, "gw-share-annual"))
    rows.append(_cert("GO-WD-202605-99", round(0.25 * imp, 3), dbl, wind, "wind", GW_ORG, GW_ORG, GW_PERIOD, "gw-s2-market"))
    # 3. Hydro produced in the period, also cancelled for another organisation (double counted, two orgs).
    rows.append(_cert("GO-HY-202606-42", round(0.2 * imp, 3), GW_PERIOD, "Waterkracht Alpen (illustrative)", "hydro",
                      GW_ORG, GW_ORG, GW_PERIOD, GW_ALL))
    rows.append(_cert("GO-HY-202606-42", round(0.2 * imp, 3), GW_PERIOD, "Waterkracht Alpen (illustrative)", "hydro",
                      "acme-logistics", "acme-logistics", GW_PERIOD, "acme-2026"))
    # 4. Site s03's own PV certified for 2.5x what its inverter metered over the interval (inflated).
    rows.append(_cert("GO-PV-S03-20260606", round(2.5 * s03_pv, 3), GW_PERIOD, "s03-pv", "solar", GW_ORG, GW_ORG,
                      GW_PERIOD, "gw-share-annual;gw-share-247;gw-onsite"))
    # 5. Solar certificate held but never cancelled: not usable for any claim.
    rows.append(_cert("GO-SO-202606-07", round(0.1 * imp, 3), GW_PERIOD, "Zonnepark Zuid (illustrative)", "solar",
                      GW_ORG, "", None, "gw-share-annual"))
    return rows


# --- figures (the methods as this script reads them; the engine's are in docs/claims.md) ----------


def figures(name: str, start: int, hours: dict[str, dict[str, np.ndarray]]) -> None:
    cf = load_claim_file(HERE / f"{name}.claims.yaml")
    p0, p1 = cf.period.start_ms, cf.period.end_ms
    n = (p1 - p0) // H

    def org_hours(a: int, hrs: int) -> dict[str, np.ndarray]:
        j = (a - start) // H
        return {k: sum(np.nan_to_num(hours[s][k][j:j + hrs]) for s in cf.sites) for k in ("import", "export", "pv")}

    o = org_hours(p0, n)
    cons = o["import"] - o["export"] + o["pv"]
    selfc = np.clip(o["pv"] - o["export"], 0, o["pv"])
    certs = read_certificates(HERE / f"{name}.certificates.csv")
    found = certificate_findings(certs, cf.organisation.id, p0, p1, metered_from(hours, start))
    usable = usable_certificates(certs, found)
    supply, outside = hourly_certificate_supply(usable, p0, n)
    cert_wh = sum(c.mwh for c in usable) * 1e6
    naive_wh = sum(c.mwh for c in certs) * 1e6
    g = read_intensity(HERE / "intensity.csv", cf.region, p0, n)
    fs = read_factors(HERE / "factors.csv")
    C, S, imp = cons.sum(), selfc.sum(), o["import"].sum()
    annual = min(1.0, (S + cert_wh) / C)
    hourly = float(np.minimum(cons, selfc + supply).sum() / C)
    loc_t = float((o["import"] * g).sum()) / 1e9  # Wh × g/kWh / 1e3 = g; / 1e6 = t

    def market_t(imp_wh: float, certs_wh: float, a: int, b: int) -> float:
        kind, scope = ("supplier", cf.supplier) if cf.supplier else ("residual", cf.region)
        return max(imp_wh - certs_wh, 0.0) * factor_for(fs, kind, scope, a, b).gco2e_per_kwh / 1e9

    print(f"\n== {name}: {cf.organisation.id}, sites {cf.sites}, {iso_hour(p0)} … {iso_hour(p1)} ({n} h, data from {iso_hour(start)})")
    print(f"consumption {C / 1e6:.3f} MWh, grid import {imp / 1e6:.3f} MWh, PV {o['pv'].sum() / 1e6:.3f} MWh, "
          f"self-consumed {S / 1e6:.3f} MWh ({S / C:.1%} of consumption), export {o['export'].sum() / 1e6:.3f} MWh")
    print(f"certificates: {len(certs)} rows, {naive_wh / 1e6:.3f} MWh listed; usable {len(usable)} rows, {cert_wh / 1e6:.3f} MWh "
          f"({outside.sum() / 1e6:.3f} MWh of it produced outside the period)")
    for f in found:
        print(f"  finding {f.kind:28s} {f.severity:6s} {f.cert_id}: {f.detail[:110]}")
    print(f"renewable share: annual {annual:.1%} (counting every listed certificate: {min(1.0, (S + naive_wh) / C):.1%}), "
          f"hourly matched {hourly:.1%}")
    print(f"scope 2 location: {loc_t:.4f} tCO2e (import x hourly intensity, mean {float((o['import'] * g).sum() / imp):.1f} g/kWh); "
          f"market: {market_t(imp, cert_wh, p0, p1):.4f} tCO2e")
    print(f"on-site PV produced {o['pv'].sum() / 1e6:.3f} MWh, self-consumed {S / 1e6:.3f} MWh")
    for c in cf.claims:
        extra = ""
        if c.kind == "scope2_reduction":
            b0, b1 = c.base_period.start_ms, c.base_period.end_ms
            ob = org_hours(b0, (b1 - b0) // H)
            gb = read_intensity(HERE / "intensity.csv", cf.region, b0, (b1 - b0) // H)
            base_t = (float((ob["import"] * gb).sum()) / 1e9 if c.method == "location"
                      else market_t(ob["import"].sum(), 0.0, b0, b1))
            now_t = loc_t if c.method == "location" else market_t(imp, cert_wh, p0, p1)
            extra = f"base {base_t:.4f} t -> period {now_t:.4f} t: reduction {1 - now_t / base_t:.1%}"
        print(f"  claim {c.id:16s} {c.kind:18s} claimed {c.claimed:<8g} expect {c.expect}  {extra}")


def write_csv(path: Path, header: list[str], rows: list) -> None:  # type: ignore[type-arg]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figures", action="store_true", help="print the figures behind the expected verdicts")
    args = ap.parse_args()
    write_csv(HERE / "intensity.csv", ["region", "hour_start", "gco2e_per_kwh"], intensity_rows())
    write_csv(HERE / "factors.csv", ["kind", "scope", "period_start", "period_end", "gco2e_per_kwh", "source"], FACTORS)
    for name, make in (("clean", clean_register), ("greenwash", greenwash_register)):
        start, hours = site_hours(name)
        write_csv(HERE / f"{name}.certificates.csv", CERT_HEADER, make(start, hours))
        if args.figures:
            figures(name, start, hours)


if __name__ == "__main__":
    main()
