"""Site: import, export, generation and consumption over time; PV against its clear-sky envelope; an
hour-by-day heatmap; the TOWT baseline against actuals. Everything hourly, from the rollup."""

from datetime import timedelta

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import cache
from dashboard.common import guard, ms, utc

s = guard("site")
st.title("Site")

sites = cache.sites(s.dsn)
if sites.empty:
    st.info("No sites registered yet.")
    st.stop()
site = st.selectbox("Site", sites["site_id"].tolist(), key="site_pick")
span = cache.site_span(s.dsn, site)
if span is None:
    st.info(f"No readings stored for {site} yet.")
    st.stop()
first, last = utc(span[0]).date(), (utc(span[1]) - timedelta(milliseconds=1)).date()
default_from = max(first, last - timedelta(days=30))
picked = st.date_input("Period (UTC days)", (default_from, last), min_value=first, max_value=last, key="site_period")
if not isinstance(picked, tuple | list) or len(picked) != 2:
    st.info("Pick the last day of the period.")
    st.stop()
start_ms = ms(utc(0).replace(year=picked[0].year, month=picked[0].month, day=picked[0].day))
end_ms = ms(utc(0).replace(year=picked[1].year, month=picked[1].month, day=picked[1].day)) + 86_400_000
hours = cache.site_hours(s.dsn, site, start_ms, end_ms)

c = st.columns(4)
for col, (label, key) in zip(c, (("Import", "import_wh"), ("Export", "export_wh"), ("Generation", "pv_wh"),
                                 ("Consumption", "consumption_wh")), strict=True):
    col.metric(label, f"{np.nansum(hours[key]) / 1e3:,.1f} kWh")

st.subheader("Energy per hour")
long = hours.melt(id_vars="hour", value_vars=["import_wh", "export_wh", "pv_wh", "consumption_wh"],
                  var_name="series", value_name="Wh")
st.plotly_chart(px.line(long, x="hour", y="Wh", color="series"), width="stretch", key="energy_chart")
unknown = int(hours["consumption_wh"].isna().sum())
if unknown:
    st.caption(f"{unknown} hour(s) with unknown energy (gaps or a register that fell) are shown empty, never as zero.")

st.subheader("PV against its clear-sky envelope")
pv = cache.pv_against_envelope(s.dsn, site, start_ms, end_ms)
if pv.empty:
    st.info(f"{site} has no PV inverter.")
else:
    fig = go.Figure()
    for dev, g in pv.groupby("device_id"):
        fig.add_trace(go.Scatter(x=g["hour"], y=g["envelope_w"], name=f"{dev} clear-sky envelope",
                                 line={"dash": "dot"}))
        fig.add_trace(go.Scatter(x=g["hour"], y=g["pv_w"], name=f"{dev} mean power"))
        above = g[g["pv_w"] > g["envelope_w"] * 1.05 + 50]
        if not above.empty:
            fig.add_trace(go.Scatter(x=above["hour"], y=above["pv_w"], mode="markers", name=f"{dev} above the sky",
                                     marker={"color": "red", "size": 8}))
    fig.update_layout(yaxis_title="W (hourly mean)")
    st.plotly_chart(fig, width="stretch", key="pv_chart")

st.subheader("Consumption: hour of day × day")
heat = hours.assign(day=hours["hour"].dt.strftime("%Y-%m-%d"), hour_of_day=hours["hour"].dt.hour)
grid = heat.pivot_table(index="hour_of_day", columns="day", values="consumption_wh", aggfunc="sum", dropna=False)
st.plotly_chart(px.imshow(grid, aspect="auto", labels={"color": "Wh", "x": "day", "y": "hour (UTC)"},
                          color_continuous_scale="Viridis"), width="stretch", key="heatmap")

st.subheader("Baseline against actuals")
weather = s.cfg.weather
if weather is None or not weather.exists():
    st.info("No weather file configured (`weather` in the dashboard config): the TOWT baseline needs hourly "
            "temperatures.")
else:
    days = (picked[1] - picked[0]).days + 1
    split_day = st.slider("Baseline days (the model is fitted on these; the rest is the reporting period)",
                          1, max(1, days - 1) if days > 1 else 1, max(1, int(days * 0.7)), key="baseline_days")
    split = utc(start_ms) + timedelta(days=split_day)
    try:
        frame, fit = cache.baseline_vs_actual(s.dsn, site, start_ms, end_ms, str(weather), split,
                                              weather.stat().st_mtime)
    except ValueError as exc:  # BaselineError, WeatherError: the reason, not a traceback
        st.warning(f"No baseline: {exc}")
    else:
        fig = go.Figure([go.Scatter(x=frame["hour"], y=frame["actual_wh"], name="metered"),
                         go.Scatter(x=frame["hour"], y=frame["baseline_wh"], name="TOWT baseline")])
        fig.add_vline(x=split, line_dash="dash")
        fig.update_layout(yaxis_title="Wh per hour")
        st.plotly_chart(fig, width="stretch", key="baseline_chart")
        rep = frame[frame["period"] == "reporting"].dropna(subset=["actual_wh", "baseline_wh"])
        c = st.columns(4)
        c[0].metric("CV(RMSE), baseline", f"{fit['cv_rmse']:.1%}")
        c[1].metric("NMBE, baseline", f"{fit['nmbe']:.2%}")
        c[2].metric("Baseline hours", fit["hours"])
        if not rep.empty:
            avoided = rep["baseline_wh"].sum() - rep["actual_wh"].sum()
            c[3].metric("Avoided (reporting)", f"{avoided / 1e3:,.1f} kWh",
                        f"{avoided / rep['baseline_wh'].sum():.1%} of predicted")
        st.caption("ASHRAE Guideline 14 asks CV(RMSE) ≤ 30 % and |NMBE| ≤ 10 % for hourly baselines; "
                   "a savings claim's verdict is gated on them (docs/claims.md).")
