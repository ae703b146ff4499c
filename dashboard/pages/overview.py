"""Overview: the sites, ingest health, the share of readings sealed and anchored, open findings, and
the latest claim verdicts at a glance."""

import plotly.express as px
import streamlit as st

from dashboard import cache
from dashboard.common import guard, verdict_badge

s = guard("overview")
st.title("Overview")

sites = cache.sites(s.dsn)
health = cache.ingest_health(s.dsn)
sealing = cache.sealing_status(s.dsn)
quarantine = cache.quarantine_by_reason(s.dsn)
summary = cache.findings_summary(s.dsn)
sets = cache.verdict_sets(s.dsn)

stored, sealed, anchored = (int(sealing[c].sum()) for c in ("readings", "sealed", "anchored"))
c = st.columns(5)
c[0].metric("Sites", len(sites))
c[1].metric("Devices", int(sites["devices"].sum()) if not sites.empty else 0)
c[2].metric("Readings stored", f"{stored:,}")
c[3].metric("Sealed", f"{sealed / stored:.1%}" if stored else "—", help="Σ leaf count of the sealed batches / readings stored")
c[4].metric("Anchored", f"{anchored / stored:.1%}" if stored else "—", help="readings in batches holding a ledger receipt")

st.subheader("Claim verdicts")
if not sets:
    st.info("No claim verdicts yet: run `wattproof claims check claims.yaml`.")
for vs in sets[:3]:
    counts = {}
    for v in vs["verdicts"]:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    st.markdown(f"**{vs['org']}** · {vs['period_start']:%Y-%m-%d %H:%M} → {vs['period_end']:%Y-%m-%d %H:%M} UTC · "
                + " · ".join(f"{verdict_badge(k)} {n}" for k, n in sorted(counts.items())))
    for v in vs["verdicts"]:
        st.markdown(f"- `{v['claim']['id']}` {v['claim'].get('text') or v['claim']['kind']} — {verdict_badge(v['verdict'])}")

left, right = st.columns(2)
with left:
    st.subheader("Sealing and anchoring per site")
    if not sealing.empty:
        df = sealing.assign(unsealed=(sealing["readings"] - sealing["sealed"]).clip(lower=0))
        fig = px.bar(df, x="site_id", y=["anchored", "unsealed"], labels={"value": "readings", "site_id": "site"},
                     barmode="stack")
        st.plotly_chart(fig, width="stretch")
    st.dataframe(sealing, hide_index=True, width="stretch")
with right:
    st.subheader("Open findings")
    if summary.empty:
        st.success("No findings.")
    else:
        fig = px.bar(summary, x="kind", y="findings", color="severity",
                     color_discrete_map={"high": "#d62728", "medium": "#ff7f0e", "low": "#1f77b4"})
        st.plotly_chart(fig, width="stretch")

st.subheader("Ingest health")
left, right = st.columns([3, 2])
with left:
    st.dataframe(health, hide_index=True, width="stretch",
                 column_config={"bucket_coverage": st.column_config.ProgressColumn(
                     "15-min coverage", min_value=0.0, max_value=1.0, format="percent")})
with right:
    st.markdown("**Quarantined messages by reason**")
    if quarantine.empty:
        st.success("Nothing quarantined.")
    else:
        st.dataframe(quarantine, hide_index=True, width="stretch")
st.subheader("Sites")
st.dataframe(sites, hide_index=True, width="stretch")
