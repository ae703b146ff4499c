"""Claims: each verdict of the latest verdict set with its evidence; annual against hourly matching,
side by side; from a verdict to the anchored batches it rests on (and, for roles that may open the
Ledger page, to a reading's verified proof)."""

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import cache
from dashboard.auth import allowed
from dashboard.common import guard, role, verdict_badge

s = guard("claims")
st.title("Claims")

sets = cache.verdict_sets(s.dsn)
if not sets:
    st.info("No claim verdicts yet: run `wattproof claims check claims.yaml`.")
    st.stop()
labels = {i: f"{vs['org']} · {vs['period_start']:%Y-%m-%d %H:%M} → {vs['period_end']:%Y-%m-%d %H:%M} UTC"
          for i, vs in enumerate(sets)}
vs = sets[st.selectbox("Verdict set", list(labels), format_func=labels.get, key="c_set")]
st.caption(f"Verdict set `{vs['set_id']}` ({vs['kind']}"
           + (f", restating `{vs['supersedes']}`" if vs["supersedes"] else "")
           + f"), anchored on the {vs['receipt'].get('backend', '?')} ledger; created {vs['created_at']:%Y-%m-%d %H:%M} UTC")

rows = []
for v in vs["verdicts"]:
    m = v.get("measured") or {}
    rows.append({"claim": v["claim"]["id"], "kind": v["claim"]["kind"], "claimed": v["claim"]["claimed"],
                 "measured": m.get("value"), "unit": m.get("unit"), "verdict": v["verdict"], "gap": v.get("gap")})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="verdict_table")

# --- annual vs hourly matching ------------------------------------------------------------------------------
shares = [v for v in vs["verdicts"] if v["claim"]["kind"] == "renewable_share" and v.get("figures")]
if shares:
    st.subheader("Renewable share: annual (volumetric) against hourly matching")
    v = shares[0]
    fa, fh = v["figures"].get("renewable_share_annual"), v["figures"].get("renewable_share_hourly")
    p0, p1 = vs["context"]["period"]
    sites = vs["context"]["sites"]
    hours = [cache.site_hours(s.dsn, site, int(p0), int(p1)) for site in sites]
    cons = np.nansum([h["consumption_wh"].to_numpy() for h in hours], axis=0)
    selfc = np.nansum([np.clip(h["pv_wh"] - h["export_wh"].fillna(0), 0, None).to_numpy() for h in hours], axis=0)
    supply = np.asarray(next((x["inputs"].get("cert_supply_wh") for x in shares if x["inputs"].get("cert_supply_wh")),
                             [0] * len(cons)), dtype=float)[: len(cons)]
    matched = np.minimum(cons, selfc + supply)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7],
                        subplot_titles=("Annual: totals over the period", "Hourly: each hour on its own"))
    if fa and fh:
        claimed = max(x["claim"]["claimed"] for x in shares)
        fig.add_trace(go.Bar(x=["claimed", "annual", "hourly"],
                             y=[claimed, 100 * fa["value"], 100 * fh["value"]], marker_color=["gray", "seagreen", "darkorange"],
                             text=[f"{claimed:.0f} %", f"{100 * fa['value']:.1f} %", f"{100 * fh['value']:.1f} %"],
                             name="share %", showlegend=False), row=1, col=1)
    hour_ts = hours[0]["hour"] if hours else []
    fig.add_trace(go.Scatter(x=hour_ts, y=cons, name="consumption (Wh)", line={"color": "black"}), row=1, col=2)
    fig.add_trace(go.Scatter(x=hour_ts, y=matched, name="matched by clean supply in the same hour (Wh)",
                             fill="tozeroy", line={"color": "seagreen"}), row=1, col=2)
    fig.update_yaxes(title_text="%", range=[0, 105], row=1, col=1)
    fig.update_layout(height=420, legend={"orientation": "h"})
    st.plotly_chart(fig, width="stretch", key="matching_chart")
    st.caption("Annual: certificates and self-consumed PV against consumption over the whole period. Hourly: "
               "only clean supply produced in the same hour counts (EnergyTag granular certificates, 24/7 style).")

# --- each verdict with its evidence -------------------------------------------------------------------------
st.subheader("Verdicts and their evidence")
batch_ids = [b[0] for b in vs["context"].get("batches", [])]
for i, v in enumerate(vs["verdicts"]):
    c = v["claim"]
    with st.expander(f"{c['id']} — {v['verdict']}", expanded=(i == 0)):
        st.markdown(f"{verdict_badge(v['verdict'])} · **{c.get('text') or c['kind']}** (claimed {c['claimed']:g})")
        for r in v["reasons"]:
            st.markdown(f"- {r}")
        m = v.get("measured") or {}
        if m.get("value") is not None:
            st.markdown(f"Measured **{m['value']:.4g} {m['unit']}** (interval {m['lo']:.4g} … {m['hi']:.4g}, "
                        f"tolerance ±{m['tolerance']:.3g}; greener is {m['greener']})"
                        + (f"; gap **{v['gap']:+.4g}**" if v.get("gap") is not None else ""))
        figs = [{"figure": k, "value": f.get("value"), "unit": f.get("unit"), "method": f.get("method"),
                 "totals": json.dumps(f.get("totals", {}))} for k, f in v.get("figures", {}).items()]
        if figs:
            st.dataframe(pd.DataFrame(figs), hide_index=True, width="stretch", key=f"figs_{i}")
        if v.get("findings"):
            st.markdown("**Findings considered**")
            st.dataframe(pd.DataFrame(v["findings"]), hide_index=True, width="stretch", key=f"find_{i}")
        if v.get("certificate_findings"):
            st.markdown("**Certificate findings**")
            st.dataframe(pd.DataFrame([{k: x[k] for k in ("kind", "cert_id", "severity", "detail")}
                                       for x in v["certificate_findings"]]), hide_index=True, width="stretch",
                         key=f"cert_{i}")
        b = v.get("batches") or {}
        st.caption(f"Coverage {v.get('coverage', 0):.1%} · rests on {b.get('count', 0)} anchored batches "
                   f"({b.get('windows', 0)} windows, SHA-256 of their ids {str(b.get('sha256', ''))[:16]}…) · "
                   f"method {v.get('method')}")

if batch_ids:
    st.subheader("From a verdict to a reading")
    st.write(f"The figures rest on {len(batch_ids)} anchored batches; pick one to see its readings and the "
             "inclusion proof of a reading, verified.")
    pick = st.selectbox("Batch", batch_ids, key="c_batch")
    if allowed(role(), "ledger"):
        if st.button("Open its proof on the Ledger page", key="c_to_ledger"):
            st.session_state["ledger_batch"] = pick
            st.switch_page("pages/ledger.py")
    else:
        win = cache.batch_window(s.dsn, pick)
        if win:
            st.caption(f"Window {win[0]:%Y-%m-%d %H:%M} → {win[1]:%H:%M} UTC; proofs are on the auditors' Ledger "
                       "page and in the report's evidence.")
