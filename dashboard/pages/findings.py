"""Findings: filter by kind, severity, site and period (the newest ``SHOWN`` matching are listed, with how
many match in all); drill down to a finding's readings and the signed frames they came in."""

import json
from datetime import UTC, datetime, timedelta

import plotly.express as px
import streamlit as st

from dashboard import cache
from dashboard.common import guard

# A year of a large fleet holds tens of thousands of findings: the page lists the newest SHOWN of those matching
# the filters (a timeline of 10,000 bars and a box of 10,000 choices took seconds to draw in the browser).
SHOWN = 1_000

s = guard("findings")
st.title("Findings")

facets = cache.finding_facets(s.dsn)
if not facets["kinds"]:
    st.success("No findings: the audit found nothing (or has not run: `wattproof audit run`).")
    st.stop()
c = st.columns(4)
kinds = c[0].multiselect("Kind", facets["kinds"], key="f_kind")
sevs = c[1].multiselect("Severity", facets["severities"], key="f_sev")
site_ids = c[2].multiselect("Site", facets["sites"], key="f_site")
lo, hi = facets["start"].date(), facets["end"].date()
period = c[3].date_input("Period (UTC days)", (lo, hi), min_value=lo, max_value=hi, key="f_period")
start = end = None
if isinstance(period, tuple | list) and len(period) == 2:
    start = datetime(period[0].year, period[0].month, period[0].day, tzinfo=UTC)
    end = datetime(period[1].year, period[1].month, period[1].day, tzinfo=UTC) + timedelta(days=1)
filters = (tuple(kinds) or None, tuple(sevs) or None, tuple(site_ids) or None, start, end)
df = cache.findings(s.dsn, *filters, SHOWN)
total = cache.findings_count(s.dsn, *filters) if len(df) >= SHOWN else len(df)
st.caption(f"{total:,} finding(s)" + (f"; the newest {len(df):,} are shown: narrow the kind, severity, site or "
                                     "period to see the others" if total > len(df) else ""))
if df.empty:
    st.stop()
timeline = df.assign(device=df["device_id"].fillna(df["site_id"]))
fig = px.timeline(timeline, x_start="start_ts", x_end="end_ts", y="device", color="kind", hover_data=["severity", "id"])
fig.update_traces(marker_line_width=3, marker_line_color=None)
st.plotly_chart(fig, width="stretch", key="findings_timeline")
st.dataframe(df.drop(columns=["evidence"]), hide_index=True, width="stretch", key="findings_table")

st.subheader("Drill down")
labels = {int(r.id): f"#{r.id} {r.kind} ({r.severity}) · {r.device_id or r.site_id} · {r.start_ts:%Y-%m-%d %H:%M}"
          for r in df.itertuples()}
fid = st.selectbox("Finding", list(labels), format_func=labels.get, key="f_pick")
f = df[df["id"] == fid].iloc[0]
st.markdown(f"**{f['kind']}** · severity **{f['severity']}** · {f['detector']} {f['detector_version']} · "
            f"{f['start_ts']:%Y-%m-%d %H:%M:%S} → {f['end_ts']:%Y-%m-%d %H:%M:%S} UTC")
st.json(json.loads(f["evidence"]), expanded=False)
if not f["device_id"]:
    st.info("A site-level finding (the site's energy balance): pick one of its devices on the Site page.")
    st.stop()
margin = timedelta(minutes=15)
readings = cache.readings_between(s.dsn, f["device_id"], f["start_ts"] - margin,
                                  max(f["end_ts"], f["start_ts"] + timedelta(minutes=1)) + margin)
st.markdown(f"**Readings of {f['device_id']}** from 15 min before to 15 min after the finding "
            f"({len(readings)} shown)")
if readings.empty:
    st.info("No stored readings in that span (a gap, or the finding is about missing data).")
    st.stop()
st.plotly_chart(px.line(readings, x="ts", y="power_w", color="channel", markers=True), width="stretch",
                key="drill_chart")
st.dataframe(readings, hide_index=True, width="stretch", key="drill_table")
seqs = sorted(readings["seq"].unique().tolist())
seq = st.selectbox("Signed frame (seq) the readings came in", seqs, key="f_frame")
raw = cache.frame_text(s.dsn, f["device_id"], int(seq))
if raw is None:
    st.warning("The frame is not in the store.")
else:
    st.caption("The frame exactly as received (its SHA-256 is in the readings table; the device's Ed25519 "
               "signature is its `sig` member).")
    st.code(raw, language="json")
