"""Savings baseline vs. the peer: our TOWT model and OpenEEmeter's CalTRACK hourly model (opendsm)
fitted on every hourly sample opendsm ships, side by side on the same hours.

    .venv/bin/python -m benchmarks.bench_caltrack [--refresh] [--record-vector SAMPLE]

opendsm pins pandas < 3 (this project runs pandas 3), so the peer runs in its own virtualenv,
``.cache/caltrack-venv`` (made with ``pip install opendsm==1.2.7`` when missing; ``CALTRACK_PYTHON``
overrides), as a subprocess of this same file (``--peer OUT.json``): it loads each sample, takes the
365 days before the sample's blackout as baseline and the 365 days after it as reporting period,
fits ``HourlyCaltrackModel`` (three-month weighted) and writes the hours, temperatures, metered
values and CalTRACK's predictions. Its output is cached in ``benchmarks/out/caltrack_peer.json``.
Here both models are scored with the same formulas on the same hours (those CalTRACK kept:
it drops zero electricity readings): CV(RMSE) = RMSE/ȳ with n in the denominator for both (the
gate's CV(RMSE) with n − p is printed for ours), NMBE = Σ(ŷ − y)/Σy, R², the reporting period's
predicted energy and savings, and each model's 90 % savings band (ours: G14 Annex B FSU; CalTRACK:
the per-hour ``predicted_uncertainty`` opendsm reports, summed in quadrature).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_CACHE = ROOT / "benchmarks" / "out" / "caltrack_peer.json"
PEER_VENV = ROOT / ".cache" / "caltrack-venv"
OPENDSM = ["opendsm==1.2.7", "multimethod<2"]  # scikit-fda 0.10 (an opendsm dependency) breaks on multimethod 2


def peer(out: Path) -> None:
    """Runs inside the opendsm virtualenv: fit CalTRACK hourly on every hourly sample."""
    import importlib.metadata

    import numpy as np
    import pandas as pd
    from opendsm import eemeter

    res = {"opendsm": importlib.metadata.version("opendsm"), "samples": {}}
    for name in [s for s in eemeter.samples() if "hourly" in s]:
        t0 = time.perf_counter()
        uk = name.startswith("uk-")
        meter, temp, meta = eemeter.load_sample(name, tempF=not uk)
        temp_f = temp * 9 / 5 + 32 if uk else temp
        b1, r0 = meta["blackout_start_date"], meta["blackout_end_date"]
        b0, r1 = b1 - pd.Timedelta(days=365), r0 + pd.Timedelta(days=365)
        meter = meter["value"] if isinstance(meter, pd.DataFrame) else meter
        elec = meta["interpretation"] == "electricity"
        sel = lambda s, a, b: s[(s.index >= a) & (s.index < b)]  # noqa: E731
        base = eemeter.HourlyCaltrackBaselineData.from_series(sel(meter, b0, b1), sel(temp_f, b0, b1), elec)
        model = eemeter.HourlyCaltrackModel().fit(base)
        periods = {}
        for period, (a, b) in {"baseline": (b0, b1), "reporting": (r0, r1)}.items():
            data = eemeter.HourlyCaltrackReportingData.from_series(sel(meter, a, b), sel(temp_f, a, b), elec)
            df = model.predict(data).dropna(subset=["observed", "predicted", "temperature"])
            idx = df.index.tz_convert("UTC")
            periods[period] = {
                "hour_ms": (idx.as_unit("ms").asi8).tolist(),
                "observed": df["observed"].astype(float).round(6).tolist(),
                "temp_c": ((df["temperature"].astype(float) - 32) * 5 / 9).round(4).tolist(),
                "caltrack": df["predicted"].astype(float).round(6).tolist(),
                "caltrack_unc90": float(np.sqrt(np.nansum(df["predicted_uncertainty"].astype(float) ** 2)))
                if "predicted_uncertainty" in df else None,
            }
        res["samples"][name] = {"unit": meta["unit"], "periods": periods, "fit_s": time.perf_counter() - t0}
        print(f"peer: {name} fitted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out.write_text(json.dumps(res))


def _peer_python() -> str:
    py = os.environ.get("CALTRACK_PYTHON") or str(PEER_VENV / "bin" / "python")
    if not Path(py).exists():
        subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", *OPENDSM], check=True)
    return py


def load_peer(refresh: bool = False) -> dict:
    if refresh or not PEER_CACHE.exists():
        PEER_CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([_peer_python(), str(Path(__file__).resolve()), "--peer", str(PEER_CACHE)], check=True)
    return json.loads(PEER_CACHE.read_text())


def compare(name: str, s: dict) -> dict:
    import numpy as np

    from audit import g14
    from audit.baselines import savings_verdict_inputs

    b, r = s["periods"]["baseline"], s["periods"]["reporting"]
    arr = lambda d, k, t=float: np.asarray(d[k], dtype=t)  # noqa: E731
    t0 = time.perf_counter()
    v = savings_verdict_inputs(arr(b, "hour_ms", np.int64), arr(b, "observed"), arr(b, "temp_c"),
                               arr(r, "hour_ms", np.int64), arr(r, "observed"), arr(r, "temp_c"))
    from audit.baselines import fit_towt
    model = fit_towt(arr(b, "hour_ms", np.int64), arr(b, "observed"), arr(b, "temp_c"))
    fit_s = time.perf_counter() - t0
    y = arr(b, "observed")
    ours_fit = model.fitted[np.argsort(arr(b, "hour_ms", np.int64), kind="stable")]
    order = np.argsort(arr(b, "hour_ms", np.int64), kind="stable")
    y, ct = y[order], arr(b, "caltrack")[order]
    ry, rct = arr(r, "observed"), arr(r, "caltrack")
    cv_n = lambda yy, ff: float(np.sqrt(np.mean((yy - ff) ** 2)) / yy.mean())  # noqa: E731
    ct_sav = float(rct.sum() - ry.sum())
    return {
        "sample": name, "n": int(y.size), "m": int(ry.size), "fit_s": fit_s,
        "ours": {"cv": cv_n(y, ours_fit), "cv_gate": v.cv_rmse, "nmbe": g14.nmbe(y, ours_fit),
                 "r2": g14.r_squared(y, ours_fit), "pred": v.predicted_wh, "sav": v.avoided_wh,
                 "hw90": v.half_width_90_wh, "fsu68": v.fsu_68, "gate": v.gate_passed, "reasons": v.gate_reasons,
                 "p": v.p, "rho": v.rho},
        "caltrack": {"cv": cv_n(y, ct), "nmbe": g14.nmbe(y, ct), "r2": g14.r_squared(y, ct),
                     "pred": float(rct.sum()), "sav": ct_sav, "hw90": r["caltrack_unc90"]},
    }


def table(rows: list[dict]) -> str:
    out = ["| sample | n / m | model | CV(RMSE) | NMBE | R² | predicted | savings ± 90 % | FSU 68 % | gate |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        o, c = row["ours"], row["caltrack"]
        out.append(f"| {row['sample']} | {row['n']} / {row['m']} | ours | {o['cv']:.1%} (gate {o['cv_gate']:.1%}) | "
                   f"{o['nmbe']:+.2%} | {o['r2']:.3f} | {o['pred']:.1f} | {o['sav']:.1f} ± {o['hw90']:.1f} | "
                   f"{o['fsu68']:.0%} | {'admit' if o['gate'] else 'refuse: ' + '; '.join(o['reasons'])} |")
        hw = "n/a" if c["hw90"] is None else f"{c['hw90']:.1f}"
        out.append(f"| | | CalTRACK | {c['cv']:.1%} | {c['nmbe']:+.2%} | {c['r2']:.3f} | {c['pred']:.1f} | "
                   f"{c['sav']:.1f} ± {hw} | | |")
    return "\n".join(out)


def checks(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        o, c = row["ours"], row["caltrack"]
        cv_ok = o["cv"] <= c["cv"] + 1e-9
        d = abs(o["sav"] - c["sav"])
        within = d <= o["hw90"] and (c["hw90"] is None or d <= c["hw90"])
        out.append(f"{row['sample']}: CV(RMSE) ours {o['cv']:.2%} vs CalTRACK {c['cv']:.2%} "
                   f"{'ok' if cv_ok else 'WORSE'}; savings differ by {d:.1f} "
                   f"({'within' if within else 'OUTSIDE'} both 90 % bands); ours fitted in {row['fit_s']:.2f} s")
    return out


def record_vector(data: dict, name: str) -> None:
    """Write one sample's hours, metered values, temperatures and CalTRACK's predictions as test data."""
    import gzip

    s = data["samples"][name]
    dest = ROOT / "tests" / "vectors" / "caltrack" / f"{name}.csv.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    lines = ["period,hour_ms,observed,temp_c,caltrack_predicted"]
    for period in ("baseline", "reporting"):
        p = s["periods"][period]
        lines += [f"{period},{h},{o!r},{t!r},{c!r}" for h, o, t, c in zip(p["hour_ms"], p["observed"], p["temp_c"],
                                                                         p["caltrack"], strict=True)]
    with gzip.open(dest, "wt", encoding="ascii", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {dest.relative_to(ROOT)} (opendsm {data['opendsm']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--refresh", action="store_true", help="refit CalTRACK (ignore the cached peer results)")
    ap.add_argument("--record-vector", metavar="SAMPLE", help="write SAMPLE as tests/vectors/caltrack data")
    ap.add_argument("--no-results", action="store_true", help="print only; do not rewrite RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="accepted for run_all; the samples are small already")
    args = ap.parse_args()
    if args.peer:
        peer(args.peer)
        return
    data = load_peer(args.refresh)
    if args.record_vector:
        record_vector(data, args.record_vector)
        return
    rows = [compare(name, s) for name, s in sorted(data["samples"].items())]
    title = (f"opendsm {data['opendsm']} CalTRACK hourly vs wattproof TOWT, {len(rows)} hourly samples "
             "(baseline 365 d before the blackout, reporting 365 d after; values in the sample's unit)")
    print(title)
    print(table(rows))
    print("\n".join(checks(rows)))
    if not args.no_results:
        from benchmarks._common import write_section

        write_section("caltrack", "Savings baseline against the peer (bench_caltrack)",
                      f"{title}.\n\n```\n{table(rows)}\n```\n\n" + "\n".join(f"- {c}" for c in checks(rows)))


if __name__ == "__main__":
    if "--peer" in sys.argv:
        main()
    else:
        sys.path.insert(0, str(ROOT))
        main()
