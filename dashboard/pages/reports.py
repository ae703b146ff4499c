"""Reports: generate a period's regulator report (``audit.reports.build_report``) and download it, or
any report generated before; each listed with what ``verify_report`` says of it against the configured
trust. Generating is the dashboard's one write: the report's files, and the manifest the report
module anchors on the ledger and records (``report_manifests``); readings, findings and verdicts are
never touched. Auditors download only."""

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import streamlit as st

from dashboard import cache
from dashboard.common import guard, ms, role

s = guard("reports")
st.title("Reports")

try:
    from audit.reports import FORMATS, build_report, verify_report
except ImportError:
    st.warning("reports: not available — this installation has no `audit.reports.build_report`.")
    st.stop()

out_root = s.cfg.reports_dir or (s.cfg.path.parent / "reports")
sets = cache.verdict_sets(s.dsn)
orgs = sorted({vs["org"] for vs in sets})
can_generate = role() in ("officer", "regulator", "admin")

st.subheader("Generate")
if not can_generate:
    st.info("Auditors see and download reports; generating one (which anchors its manifest) is for officers, "
            "regulators and admins.")
elif not orgs:
    st.info("No organisation has claim verdicts yet: run `wattproof claims check claims.yaml` first.")
else:
    with st.form("generate"):
        org = st.selectbox("Organisation", orgs)
        latest = next(vs for vs in sets if vs["org"] == org)
        p0, p1 = latest["period_start"], latest["period_end"]
        c = st.columns(2)
        d0 = c[0].date_input("From (UTC day)", p0.date())
        d1 = c[1].date_input("To (UTC day, exclusive)", p1.date() if p1 > p0 else p0.date() + timedelta(days=1))
        formats = st.multiselect("Formats", list(FORMATS), default=list(FORMATS))
        go = st.form_submit_button("Generate report")
    if go:
        t0 = datetime(d0.year, d0.month, d0.day, tzinfo=UTC)
        t1 = datetime(d1.year, d1.month, d1.day, tzinfo=UTC)
        out = out_root / f"{org}-{t0:%Y%m%d}-{t1:%Y%m%d}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        try:
            if s.cfg.ledger != "local" or s.cfg.ledger_path is None:
                raise ValueError("generating needs the local ledger with its operator key (`ledger_path`); for "
                                 "Fabric use `wattproof report` with the operator key")
            from ledger.local import LocalLedger

            backend = LocalLedger.open(s.cfg.ledger_path, create=False)  # with its key: the manifest is signed
            try:
                with st.spinner("building, signing and anchoring the report…"):
                    summary = build_report(s.dsn, backend, org, ms(t0), ms(t1), formats, out)
            finally:
                backend.close()
        except (ValueError, OSError) as exc:
            st.error(f"No report: {exc}")
        else:
            st.success(f"Report {summary.report_id}: {len(summary.files)} files in {summary.seconds:.1f} s, "
                       f"manifest anchored; verdicts {summary.verdicts}")


def _zip(d: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(d.rglob("*")):
            if f.is_file():
                z.write(f, f"{d.name}/{f.relative_to(d)}")
    return buf.getvalue()


st.subheader("Reports")
found = sorted((p.parent for p in out_root.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime, reverse=True) \
    if out_root.exists() else []
if not found:
    st.info(f"No reports in {out_root} yet.")
trust = cache.trust(s.cfg.trust)
for i, d in enumerate(found[:20]):
    check = verify_report(d, trust)
    state = ("verified" if check.ok and check.pinned else "self-consistent only (no trust configured)"
             if check.ok else "NOT verified")
    with st.expander(f"{d.name} — {state}", expanded=(i == 0)):
        if check.problems:
            for p in check.problems:
                st.markdown(f"- `{p.code}` {p.subject}: {p.detail}")
        st.caption(check.anchoring)
        files = sorted(f.name for f in d.iterdir() if f.is_file())
        st.write(", ".join(files))
        st.download_button("Download (zip)", _zip(d), file_name=f"{d.name}.zip", mime="application/zip",
                           key=f"dl_{i}")
        pdf = d / "report.pdf"
        if pdf.exists():
            st.download_button("Download the PDF", pdf.read_bytes(), file_name=f"{d.name}.pdf",
                               mime="application/pdf", key=f"pdf_{i}")
