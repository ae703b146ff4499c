"""The report as PDF: tables and charts drawn with ReportLab (platypus for the flow, reportlab.graphics for
the charts). Owns the layout only: every number comes from the report document (``build.py``) and is printed
with ``model``'s formats, so the PDF's text can be checked against ``report.json``.

Sections: summary; energy by month (or by day) as a bar chart; claim verdicts with their evidence; the ESRS
E1 table; findings (counts by kind, then the first rows); data coverage per site with a chart; anchoring
(the verdict set's header and receipt, the batches per site). Long lists are cut in the PDF and complete in
``report.json`` / ``batches.jsonl`` (the PDF says so).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from audit.reports.model import count, esrs_value, measured, mwh, pct

MAX_FINDINGS_ROWS = 60
_ASCII = str.maketrans({"≥": ">=", "≤": "<=", "→": "->", "∓": "-/+", "±": "+/-", "Σ": "sum", "·": "*", "×": "x",
                        "₂": "2", "−": "-", "…": "...", "—": "-", "–": "-", "’": "'", "“": '"', "”": '"'})
_styles = getSampleStyleSheet()
H1, H2, BODY = _styles["Title"], _styles["Heading2"], _styles["BodyText"]
SMALL = _styles["BodyText"].clone("small", fontSize=7.5, leading=9)
CELL = _styles["BodyText"].clone("cell", fontSize=7.5, leading=9)


def text(s: Any) -> str:
    """Plain text safe for the standard PDF fonts (WinAnsi) and for ReportLab's mini-markup."""
    out = str(s).translate(_ASCII)
    out = out.encode("cp1252", "replace").decode("cp1252")
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _p(s: Any, style: Any = BODY) -> Paragraph:
    return Paragraph(text(s), style)


def _table(header: list[str], rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    data = [[_p(h, CELL) for h in header]] + [[_p(c, CELL) for c in r] for r in rows]
    t = Table(data, colWidths=widths, repeatRows=1)
    t.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6ee")),
                           ("GRID", (0, 0), (-1, -1), 0.3, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return t


def _bars(title: str, labels: list[str], series: list[tuple[str, list[float], Any]], unit: str) -> Drawing:
    d = Drawing(170 * mm, 70 * mm)
    ch = VerticalBarChart()
    ch.x, ch.y, ch.width, ch.height = 14 * mm, 14 * mm, 120 * mm, 48 * mm
    ch.data = [vals for _, vals, _ in series] or [[0.0]]
    ch.categoryAxis.categoryNames = labels
    ch.categoryAxis.labels.fontSize = 6
    ch.categoryAxis.labels.angle = 45 if len(labels) > 8 else 0
    ch.categoryAxis.labels.boxAnchor = "ne" if len(labels) > 8 else "n"
    ch.valueAxis.labels.fontSize = 6
    ch.valueAxis.valueMin = 0
    for i, (_, _, col) in enumerate(series):
        ch.bars[i].fillColor = col
    d.add(ch)
    d.add(String(14 * mm, 65 * mm, text(f"{title} ({unit})"), fontSize=8))
    lg = Legend()
    lg.x, lg.y, lg.fontSize = 138 * mm, 55 * mm, 7
    lg.colorNamePairs = [(col, name) for name, _, col in series]
    d.add(lg)
    return d


def _energy_chart(doc: dict[str, Any]) -> Flowable:
    months = doc["energy"]["months"]
    if len(months) >= 2:
        labels = [m["month"] for m in months]
        rows = months
        title = "Energy by month"
    else:
        rows = doc["energy_daily"]
        labels = [r["day"][5:] for r in rows]
        title = "Energy by day"
    series = [("consumption", [r["consumption_wh"] / 1e6 for r in rows], colors.HexColor("#3b6ea5")),
              ("grid import", [r["import_wh"] / 1e6 for r in rows], colors.HexColor("#999999")),
              ("PV", [r["pv_wh"] / 1e6 for r in rows], colors.HexColor("#e0a526"))]
    return _bars(title, labels, series, "MWh")


def _summary(doc: dict[str, Any]) -> list[Flowable]:
    e, org = doc["energy"]["org"], doc["organisation"]
    cov = doc["summary"]
    p0, p1 = doc["period"]["from"], doc["period"]["to"]
    verdicts = Counter(v["verdict"] for v in doc["verdicts"])
    rows = [["Organisation", f"{org['name'] or org['id']} ({org['id']})"],
            ["Period (UTC, end exclusive)", f"{p0} to {p1}"],
            ["Sites", ", ".join(doc["sites"])],
            ["Electricity consumption", mwh(e["consumption_wh"])],
            ["Grid import / export", f"{mwh(e['import_wh'])} / {mwh(e['export_wh'])}"],
            ["On-site PV produced / self-consumed", f"{mwh(e['pv_wh'])} / {mwh(e['self_consumed_wh'])}"],
            ["Coverage (energy-weighted)", pct(e["coverage_energy_weighted"])],
            ["Hours known", f"{count(e['hours_known'])} of {count(e['hours'])}"],
            ["Readings expected / stored", f"{count(cov['readings_expected'])} / {count(cov['readings_stored'])}"],
            ["Readings sealed / anchored", f"{count(cov['readings_sealed'])} / {count(cov['readings_anchored'])}"],
            ["Anchored share of stored readings", pct(cov["anchored_share"])],
            ["Findings (high severity)", f"{count(cov['findings'])} ({count(cov['findings_high'])})"],
            ["Claim verdicts", ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())) or "no verdict set"]]
    return [_p("Summary", H2), _table(["", ""], rows, [60 * mm, 110 * mm]), Spacer(1, 4 * mm), _energy_chart(doc)]


def _verdicts(doc: dict[str, Any]) -> list[Flowable]:
    out: list[Flowable] = [_p("Claim verdicts", H2)]
    vs = doc["verdict_set"]
    if vs is None:
        return out + [_p("No anchored verdict set of this organisation overlaps the period.")]
    out.append(_p(f"Verdict set {vs['set_id']} ({vs['kind']}), claim period {vs['period_iso'][0]} to "
                  f"{vs['period_iso'][1]}, anchored: {'yes' if vs['on_ledger'] else 'NO'}."))
    rows = []
    for v in doc["verdicts"]:
        m = v.get("measured") or {}
        interval = f"[{m.get('lo'):.4f}, {m.get('hi'):.4f}]" if m and None not in (m.get("lo"), m.get("hi")) else "n/a"
        rows.append([v["claim"]["id"], v["claim"]["kind"], f"{v['claim']['claimed']:g}",
                     measured(m.get("value"), m.get("unit", "")) if m else "n/a", interval, v["verdict"],
                     "n/a" if v.get("gap") is None else f"{v['gap']:+.4f}"])
    out.append(_table(["claim", "kind", "claimed", "measured", "interval", "verdict", "gap"], rows,
                      [26 * mm, 27 * mm, 12 * mm, 24 * mm, 30 * mm, 30 * mm, 21 * mm]))
    out.append(Spacer(1, 3 * mm))
    for v in doc["verdicts"]:
        b = v.get("batches") or {}
        lines = [f"<b>{text(v['claim']['id'])}</b>: {text(v['verdict'])}; coverage {text(pct(v.get('coverage')))}; "
                 f"{text(count(b.get('count')))} anchored batches (ids SHA-256 {text(str(b.get('sha256', ''))[:16])}...)"]
        lines += [text(f"- {r}") for r in v.get("reasons", [])]
        for f in v.get("findings", []):
            lines.append(text(f"- finding considered: {f['kind']} ({f['severity']}) x{f['count']} on "
                              f"{', '.join(f['devices'])}"))
        for f in v.get("certificate_findings", []):
            lines.append(text(f"- certificate finding {f['kind']} {f['cert_id']}: {f['detail']}"))
        out.append(Paragraph("<br/>".join(lines), SMALL))
        out.append(Spacer(1, 2 * mm))
    return out


def _esrs(doc: dict[str, Any]) -> list[Flowable]:
    rows = []
    for r in doc["esrs"]:
        value = esrs_value(r["value"], r["unit"])
        rows.append([f"{r['disclosure']} {r['paragraph']}", r["datapoint"] or "(element not found)", r["label"], value,
                     (r["source"] or r["note"] or "") + (f"; claim {r['claim']}: {r['verdict']}" if r["claim"] else ""),
                     r["reference"]])
    return [_p("ESRS E1 disclosures these figures support", H2),
            _p("ESRS E1 Climate change (Commission Delegated Regulation (EU) 2023/2772, Annex I). Metered electricity "
               "only: fuels, heat, steam and cooling are outside what wattproof measures. 'reference' says whether "
               "the paragraph and element could be confirmed against the published text (docs/reports.md).", SMALL),
            _table(["disclosure", "datapoint (XBRL element)", "figure", "value", "source", "reference"], rows,
                   [22 * mm, 40 * mm, 38 * mm, 24 * mm, 34 * mm, 16 * mm])]


def _findings(doc: dict[str, Any]) -> list[Flowable]:
    f = doc["findings"]
    by = Counter((x["kind"], x["severity"]) for x in f)
    rows = [[k, s, count(n)] for (k, s), n in sorted(by.items())]
    out = [_p("Findings", H2), _p(f"{count(len(f))} findings of the audit on the sites overlapping the period.")]
    if rows:
        out.append(_table(["kind", "severity", "count"], rows, [60 * mm, 30 * mm, 30 * mm]))
        detail = [[x["site"], x["device"] or "-", x["kind"], x["severity"], _iso(x["start_ms"]), _iso(x["end_ms"])]
                  for x in f[:MAX_FINDINGS_ROWS]]
        out += [Spacer(1, 3 * mm), _table(["site", "device", "kind", "severity", "from", "to"], detail)]
        if len(f) > MAX_FINDINGS_ROWS:
            out.append(_p(f"First {MAX_FINDINGS_ROWS} of {len(f)} shown; all are in report.json.", SMALL))
    return out


def _coverage(doc: dict[str, Any]) -> list[Flowable]:
    rows = [[c["site"], count(c["readings_expected"]), count(c["readings_stored"]), count(c["readings_sealed"]),
             count(c["readings_anchored"]), pct(c["anchored_share"]), ", ".join(c["silent_devices"]) or "-"]
            for c in doc["coverage"]]
    chart = _bars("Readings stored / sealed / anchored per site", [c["site"] for c in doc["coverage"]],
                  [("stored", [c["readings_stored"] for c in doc["coverage"]], colors.HexColor("#999999")),
                   ("sealed", [c["readings_sealed"] for c in doc["coverage"]], colors.HexColor("#3b6ea5")),
                   ("anchored", [c["readings_anchored"] for c in doc["coverage"]], colors.HexColor("#2e8b57"))],
                  "readings")
    return [_p("Data coverage", H2),
            _p("Expected: per device and channel, its usual readings per hour (the mode over the period's hours with "
               "data) times the period's hours. Sealed: readings held by the sites' batches of the period's windows; "
               "anchored: those whose header the ledger holds.", SMALL),
            _table(["site", "expected", "stored", "sealed", "anchored", "anchored share", "silent devices"], rows),
            chart]


def _anchoring(doc: dict[str, Any]) -> list[Flowable]:
    a = doc["anchoring"]
    out: list[Flowable] = [_p("Anchoring: what the figures rest on", H2)]
    vs = doc["verdict_set"]
    if vs is not None:
        r = vs["receipt"]
        out.append(_p(f"Verdict set {vs['set_id']}: header SHA-256 {r.get('header_hash')}, {r.get('backend')} receipt "
                      + (f"record {r.get('ref')} (record hash {r.get('record_hash')})" if r.get("backend") == "local"
                         else f"transaction {r.get('tx_id')} in block {r.get('block')}"), SMALL))
    rows = [[s["site"], count(s["batches"]), count(s["leaves"]), count(s["on_ledger"]), _iso(s["first_window_ms"]),
             _iso(s["last_window_ms"])] for s in a["per_site"]]
    out += [_p(f"{count(a['batches'])} batches ({count(a['on_ledger'])} found on the ledger with the same header "
               f"hash); the list with every receipt is batches.jsonl (SHA-256 of its batch ids in order: "
               f"{a['ids_sha256']}).", SMALL),
            _table(["site", "batches", "leaves", "on ledger", "first window", "last window"], rows),
            Spacer(1, 3 * mm),
            _p("Every file of this report is listed with its SHA-256 in manifest.json, signed with the operator's "
               "key and anchored on the ledger. Check it offline: wattproof verify-report DIR --trust trust.json",
               SMALL)]
    return out


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def write_pdf(path: Path, doc: dict[str, Any]) -> None:
    org = doc["organisation"]
    story: list[Flowable] = [_p(f"Regulator report: {org['name'] or org['id']}", H1),
                             _p(f"Generated {doc['generated']} by wattproof ({doc['format']}). Period "
                                f"{doc['period']['from']} to {doc['period']['to']}.", SMALL)]
    for part in (_summary, _verdicts, _esrs, _findings, _coverage, _anchoring):
        story += part(doc)
        story.append(Spacer(1, 5 * mm))
    pdf = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title=f"wattproof report {org['id']}", author="wattproof",
                            invariant=1)
    pdf.build(story)
