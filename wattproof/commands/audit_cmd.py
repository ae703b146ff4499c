"""`wattproof audit run | score | baseline`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

EXIT_UNFIT = 3  # the baseline was fitted but fails ASHRAE Guideline 14: no savings reported


def parse_time_ms(text: str, option: str) -> int:
    """An ISO 8601 date or time; without a zone it is UTC."""
    import numpy as np

    t = text.strip().removesuffix("Z").removesuffix("+00:00")
    try:
        value = np.datetime64(t, "ms")
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date or time (UTC), e.g. 2026-06-01 or 2026-06-01T12:00",
                                 param_hint=option) from None
    if np.isnat(value):
        raise typer.BadParameter(f"{text!r} is not a time", param_hint=option)
    return int(value.astype(np.int64))


@app.command("run", help="Run the detectors over stored readings and write findings (idempotent).")
def run(
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    site: str | None = typer.Option(None, "--site", help="Only this site."),
    since: str | None = typer.Option(None, "--since", help="Incremental: only findings from this time on (ISO 8601, UTC)."),
    stl: bool = typer.Option(False, "--stl", help="Also report stl_anomaly findings (needs ≥ 2 weeks of data; opt-in)."),
    every: int | None = typer.Option(None, "--every", min=1, help="Run again every N seconds (service mode)."),
) -> None:
    import time

    from audit.run import run_audit

    since_ms = None if since is None else parse_time_ms(since, "--since")
    while True:
        new = run_audit(db, site=site, since_ms=since_ms, stl=stl)
        typer.echo(f"{sum(new.values())} new findings" + (f": {dict(sorted(new.items()))}" if new else ""))
        if every is None:
            return
        time.sleep(every)


@app.command("score", help="Precision, recall and F1 per fault kind against a truth.jsonl.")
def score(
    truth: Path = typer.Option(..., "--truth", exists=True, dir_okay=False, help="truth.jsonl from simulate."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
) -> None:
    from audit.score import other_findings
    from audit.score import score as run_score

    typer.echo(f"{'kind':22} {'truth':>5} {'found':>5} {'precision':>9} {'recall':>6} {'F1':>5}")
    for s in run_score(db, truth):
        typer.echo(f"{s.kind:22} {s.truths:5} {s.findings:5} {s.precision:9.2f} {s.recall:6.2f} {s.f1:5.2f}")
    others = other_findings(db, truth)
    if others:
        typer.echo("other findings (kinds the truth does not list; 'near' = overlapping an injected fault on the same site ± 1 h):")
        for o in others:
            typer.echo(f"  {o.kind:22} {o.findings:5}  near {o.near_injected_fault}")


@app.command("baseline", help="TOWT baseline model of a site with ASHRAE Guideline 14 fit metrics, and savings with uncertainty.")
def baseline(
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    site: str = typer.Option(..., "--site", help="Site id."),
    weather: Path = typer.Option(..., "--weather", dir_okay=False, help="CSV: site,timestamp,temperature_c (hourly, UTC)."),
    baseline_from: str = typer.Option(..., "--baseline-from", help="Baseline period start (ISO 8601, UTC)."),
    baseline_to: str = typer.Option(..., "--baseline-to", help="Baseline period end (exclusive)."),
    report_from: str = typer.Option(..., "--report-from", help="Reporting period start."),
    report_to: str = typer.Option(..., "--report-to", help="Reporting period end (exclusive)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    import msgspec

    from audit.baselines import BaselineError, align_weather, fit_towt, load_site_hourly, savings
    from audit.weather import read_weather

    b0, b1 = parse_time_ms(baseline_from, "--baseline-from"), parse_time_ms(baseline_to, "--baseline-to")
    r0, r1 = parse_time_ms(report_from, "--report-from"), parse_time_ms(report_to, "--report-to")
    w_ms, w_temp = read_weather(weather, site)
    hb, yb = load_site_hourly(db, site, b0, b1)
    if hb.size == 0:
        raise BaselineError(f"site {site}: no complete hours of metered energy in the baseline period {baseline_from} … {baseline_to}")
    model = fit_towt(hb, yb, align_weather(hb, w_ms, w_temp, str(weather)))
    hr, yr = load_site_hourly(db, site, r0, r1)
    if hr.size == 0:
        raise BaselineError(f"site {site}: no complete hours of metered energy in the reporting period {report_from} … {report_to}")
    tr = align_weather(hr, w_ms, w_temp, str(weather))
    sv = savings(model, hr, yr, tr) if model.fit else None

    def metrics(m):  # type: ignore[no-untyped-def]
        return None if m is None else {"n": m.n, "p": m.p, "cv_rmse": m.cv_rmse, "nmbe": m.nmbe,
                                       "cv_rmse_limit": m.limits[0], "nmbe_limit": m.limits[1], "passes": m.passes}

    out = {
        "site": site, "model": "towt", "status": "fit" if model.fit else "unfit", "unfit_reasons": model.reasons,
        "baseline": {"from": baseline_from, "to": baseline_to, "hours": model.n, "parameters": model.p,
                     "temperature_knots_c": list(model.knots), "residual_lag1_autocorrelation": model.rho,
                     "hourly": metrics(model.hourly), "monthly": metrics(model.monthly)},
        "reporting": None if sv is None else {
            "from": report_from, "to": report_to, "hours": sv.hours, "predicted_wh": sv.predicted_wh,
            "metered_wh": sv.metered_wh, "savings_wh": sv.savings_wh, "fractional_savings": sv.fractional_savings,
            "uncertainty": [{"confidence": c, "savings_half_width_wh": u,
                             "fsu": None if sv.fsu(c) == float("inf") else sv.fsu(c)} for c, u in sv.uncertainty_wh.items()]},
    }
    if as_json:
        typer.echo(msgspec.json.encode(out).decode())
    else:
        h = model.hourly
        typer.echo(f"site {site}: TOWT baseline {baseline_from} … {baseline_to}: {h.n} hours, p = {h.p} parameters, "
                   f"temperature change points {list(model.knots)} °C, residual ρ = {model.rho:.2f}")
        for m in (model.hourly, model.monthly):
            if m is None:
                typer.echo("  monthly: n/a (fewer than 3 months in the baseline)")
                continue
            verdict = "pass" if m.passes else "FAIL"
            typer.echo(f"  {m.resolution:7} CV(RMSE) {m.cv_rmse:6.1%} (≤ {m.limits[0]:.0%})  "
                       f"NMBE {m.nmbe:+7.2%} (within ±{m.limits[1]:.0%})  {verdict}")
        if sv is None:
            typer.echo("model: UNFIT under ASHRAE Guideline 14 — " + "; ".join(model.reasons) + ". No savings reported.")
        else:
            typer.echo(f"model: fit. Reporting {report_from} … {report_to}: {sv.hours} hours, predicted "
                       f"{sv.predicted_wh / 1000:.1f} kWh, metered {sv.metered_wh / 1000:.1f} kWh")
            unc = ", ".join(f"± {u / 1000:.1f} kWh at {c:.0%}" + (f" (FSU {sv.fsu(c):.0%})" if sv.savings_wh else "")
                            for c, u in sv.uncertainty_wh.items())
            typer.echo(f"savings {sv.savings_wh / 1000:.1f} kWh ({sv.fractional_savings:+.1%}) {unc}")
    if sv is None:
        raise typer.Exit(EXIT_UNFIT)
