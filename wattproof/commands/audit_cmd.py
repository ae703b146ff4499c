"""`wattproof audit run | score | baseline`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

EXIT_UNFIT = 3  # the savings gate refused (figures printed, savings not admitted)


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
    start: str | None = typer.Option(None, "--from", help="Incremental: only findings from this time on (ISO 8601, UTC)."),
    since: str | None = typer.Option(None, "--since", hidden=True, help="Old spelling of --from."),
    stl: bool = typer.Option(False, "--stl", help="Also report stl_anomaly findings (needs ≥ 2 weeks of data; opt-in)."),
    every: int | None = typer.Option(None, "--every", min=1, help="Run again every N seconds (service mode)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per run: new findings by kind."),
) -> None:
    import json
    import time

    from audit.run import run_audit
    from wattproof.progress import progress

    if start is not None and since is not None:
        raise typer.BadParameter("give --from once (--since is its old spelling)", param_hint="--from")
    start, option = (start, "--from") if start is not None else (since, "--since")
    since_ms = None if start is None else parse_time_ms(start, option)
    while True:
        with progress("audit", "devices", quiet=json_out) as update:
            new = run_audit(db, site=site, since_ms=since_ms, stl=stl, progress=update)
        if json_out:
            typer.echo(json.dumps({"new_findings": sum(new.values()), "by_kind": dict(sorted(new.items()))}))
        else:
            typer.echo(f"{sum(new.values())} new findings" + (f": {dict(sorted(new.items()))}" if new else ""))
        if every is None:
            return
        time.sleep(every)


@app.command("score", help="Precision, recall and F1 per fault kind against a truth.jsonl.")
def score(
    truth: Path = typer.Option(..., "--truth", exists=True, dir_okay=False, help="truth.jsonl from simulate."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable scores."),
) -> None:
    from audit.score import other_findings
    from audit.score import score as run_score

    if json_out:
        import dataclasses
        import json

        typer.echo(json.dumps({"scores": [{**dataclasses.asdict(s), "f1": s.f1} for s in run_score(db, truth)],
                               "other_findings": [dataclasses.asdict(o) for o in other_findings(db, truth)]}))
        return
    typer.echo(f"{'kind':22} {'truth':>5} {'found':>5} {'precision':>9} {'recall':>6} {'F1':>5}")
    for s in run_score(db, truth):
        typer.echo(f"{s.kind:22} {s.truths:5} {s.findings:5} {s.precision:9.2f} {s.recall:6.2f} {s.f1:5.2f}")
    others = other_findings(db, truth)
    if others:
        typer.echo("other findings (kinds the truth does not list; 'near' = overlapping an injected fault on the same site ± 1 h):")
        for o in others:
            typer.echo(f"  {o.kind:22} {o.findings:5}  near {o.near_injected_fault}")


@app.command("baseline", help="TOWT baseline of a site (CalTRACK hourly method), its fit, and the savings of a reporting "
             "period with their uncertainty and the savings gate (ASHRAE Guideline 14).")
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
    import dataclasses

    import msgspec

    from audit import baselines as bl
    from audit.weather import read_weather

    b0, b1 = parse_time_ms(baseline_from, "--baseline-from"), parse_time_ms(baseline_to, "--baseline-to")
    r0, r1 = parse_time_ms(report_from, "--report-from"), parse_time_ms(report_to, "--report-to")
    w_ms, w_temp = read_weather(weather, site)
    hb, yb = bl.load_site_hourly(db, site, b0, b1)
    if hb.size == 0:
        raise bl.BaselineError(f"site {site}: no complete hours of metered energy in the baseline period {baseline_from} … {baseline_to}")
    tb = bl.align_weather(hb, w_ms, w_temp, str(weather))
    hr, yr = bl.load_site_hourly(db, site, r0, r1)
    if hr.size == 0:
        raise bl.BaselineError(f"site {site}: no complete hours of metered energy in the reporting period {report_from} … {report_to}")
    v = bl.savings_verdict_inputs(hb, yb, tb, hr, yr, bl.align_weather(hr, w_ms, w_temp, str(weather)))
    out = {"site": site, "model": "towt", "status": "admitted" if v.gate_passed else "refused",
           "baseline": {"from": baseline_from, "to": baseline_to},
           "reporting": {"from": report_from, "to": report_to},
           **{k: (None if isinstance(x, float) and x == float("inf") else x) for k, x in dataclasses.asdict(v).items()}}
    if as_json:
        typer.echo(msgspec.json.encode(out).decode())
    else:
        kwh = lambda x: "n/a" if x is None else f"{x / 1000:.1f} kWh"  # noqa: E731
        pct = lambda x, f=".1%": "n/a" if x is None or x == float("inf") else format(x, f)  # noqa: E731
        typer.echo(f"site {site}: TOWT baseline {baseline_from} … {baseline_to}: {v.baseline_hours} hours, "
                   f"{v.segmentation or 'no model'}, p = {v.p or 0:.0f} effective parameters, residual ρ = {v.rho or 0:.2f}")
        typer.echo(f"  hourly CV(RMSE) {pct(v.cv_rmse)}  NMBE {pct(v.nmbe, '+.2%')} (Σ(ŷ−y)/Σy)  R² {pct(v.r2, '.3f')}")
        typer.echo(f"reporting {report_from} … {report_to}: {v.reporting_hours} hours, predicted {kwh(v.predicted_wh)}, "
                   f"metered {kwh(v.metered_wh)}")
        if v.avoided_wh is not None:
            typer.echo(f"savings {kwh(v.avoided_wh)} ({pct(v.fractional_savings, '+.1%')}) ± {kwh(v.half_width_68_wh)} "
                       f"at 68 % (FSU {pct(v.fsu_68, '.0%')}), ± {kwh(v.half_width_90_wh)} at 90 % (FSU {pct(v.fsu_90, '.0%')})")
        typer.echo("gate: savings admitted (ASHRAE Guideline 14)" if v.gate_passed else
                   "gate: REFUSED — " + "; ".join(v.gate_reasons) + ". A savings claim on this baseline is unverifiable.")
    if not v.gate_passed:
        raise typer.Exit(EXIT_UNFIT)
