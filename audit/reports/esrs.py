"""The figures of a report mapped to the ESRS E1 disclosures they support, each with its datapoint reference.

Owns: the mapping table (pure). ESRS E1 = *ESRS E1 Climate change*, in Annex I of Commission Delegated
Regulation (EU) 2023/2772 (ESRS Set 1, drafted by EFRAG). Datapoints are named by disclosure requirement and
paragraph, and by the element name of EFRAG's ESRS XBRL taxonomy (prefix ``esrs:``).

What could be confirmed from here (docs/reports.md, "ESRS E1" says where): E1-5 §35 and §37 (a)–(c)(iii) —
total energy consumption related to own operations in MWh, disaggregated into fossil, nuclear and renewable
sources, the renewable part into (i) fuel, (ii) purchased or acquired electricity, heat, steam and cooling from
renewable sources and (iii) self-generated non-fuel renewable energy; §38 (further fossil disaggregation in
high climate impact sectors); §39 (renewable and non-renewable energy production, where applicable, in part);
E1-6 §44 (a)–(d) (gross Scope 1, 2, 3 and total GHG emissions in tCO2eq), §52 and AR 47 (total GHG emissions
split by the location- and market-based Scope 2 underneath). **Not confirmed from the text**: §49 (a)/(b) as
the paragraph naming gross location-based and market-based Scope 2 emissions (recalled; no copy of §49 was
found), AR 34 as the table holding the renewable share, and every taxonomy element name (seen only in
third-party code that reads ESRS XBRL reports, not in EFRAG's taxonomy files). The EFRAG IG 3 datapoint ids
(e.g. ``E1-5_01``) could not be found at all and are not given.

A figure here covers **metered electricity only** (import, export and on-site PV of the sites' main meters
and inverters): fuels, heat, steam and cooling are not metered by wattproof, so the E1-5 totals are the
electricity part of the datapoint, never the whole datapoint.
"""

from __future__ import annotations

from typing import Any, Final

CONFIRMED: Final = "confirmed"
NOT_CONFIRMED: Final = "not confirmed"

#: (key, disclosure requirement, paragraph, taxonomy element (None: not found), label, unit, reference status)
DATAPOINTS: Final = (
    ("total_energy", "E1-5", "§37", "esrs:EnergyConsumptionRelatedToOwnOperations",
     "Total energy consumption related to own operations (electricity part)", "MWh", CONFIRMED),
    ("renewable_purchased", "E1-5", "§37(c)(ii)",
     "esrs:ConsumptionOfPurchasedOrAcquiredElectricityHeatSteamAndCoolingFromRenewableSources",
     "Consumption of purchased electricity from renewable sources (usable certificates applied)", "MWh", CONFIRMED),
    ("self_generated", "E1-5", "§37(c)(iii)", "esrs:ConsumptionOfSelfgeneratedNonfuelRenewableEnergy",
     "Consumption of self-generated non-fuel renewable energy (on-site PV used on site)", "MWh", CONFIRMED),
    ("renewable_share", "E1-5", "§37(c) with AR 34", "esrs:PercentageOfRenewableSourcesInTotalEnergyConsumption",
     "Share of renewable sources in total energy consumption (annual volumetric)", "%", NOT_CONFIRMED),
    ("renewable_production", "E1-5", "§39", None,
     "Renewable energy production (on-site PV)", "MWh", NOT_CONFIRMED),
    ("scope2_location", "E1-6", "§44(b), §49(a)", "esrs:GrossLocationBasedScope2GreenhouseGasEmissions",
     "Gross location-based Scope 2 GHG emissions", "tCO2e", NOT_CONFIRMED),
    ("scope2_market", "E1-6", "§44(b), §49(b)", "esrs:GrossMarketBasedScope2GreenhouseGasEmissions",
     "Gross market-based Scope 2 GHG emissions", "tCO2e", NOT_CONFIRMED),
)


def _from_verdicts(verdicts: list[dict[str, Any]], figure: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first verdict carrying ``figure`` (with a value), and that figure."""
    for v in verdicts:
        f = (v.get("figures") or {}).get(figure)
        if f and f.get("value") is not None:
            return v, f
    return None


def esrs_rows(org_energy: dict[str, Any], verdicts: list[dict[str, Any]], period: list[int]) -> list[dict[str, Any]]:
    """One row per datapoint: value (None when no figure supports it), unit, period, source and why not."""
    rows = []
    for key, dr, para, element, label, unit, status in DATAPOINTS:
        row: dict[str, Any] = {"key": key, "disclosure": dr, "paragraph": para, "datapoint": element, "label": label,
                               "unit": unit, "reference": status, "value": None, "period": list(period),
                               "source": None, "claim": None, "verdict": None, "note": None}
        if key == "total_energy":
            row |= {"value": org_energy["consumption_wh"] / 1e6, "source": "metered: Σ (import − export + pv) over "
                    "known hours (renewable_share consumption_wh)"}
        elif key == "self_generated":
            row |= {"value": org_energy["self_consumed_wh"] / 1e6,
                    "source": "metered: Σ clip(pv − export, 0, pv) over known hours"}
        elif key == "renewable_production":
            row |= {"value": org_energy["pv_wh"] / 1e6, "source": "metered: Σ pv over known hours"}
        else:
            figure = {"renewable_purchased": "renewable_share_annual", "renewable_share": "renewable_share_annual",
                      "scope2_location": "scope2_location", "scope2_market": "scope2_market"}[key]
            got = _from_verdicts(verdicts, figure)
            if got is None:
                row["note"] = (f"no verdict of the period computes {figure}: it needs a claim of that kind with its "
                               f"inputs (certificates, grid intensity or emission factors)")
            else:
                v, f = got
                if key == "renewable_purchased":
                    value = f["totals"].get("certificates_applied_wh", 0.0) / 1e6
                elif key == "renewable_share":
                    value = f["value"] * 100.0
                else:
                    value = f["value"]
                row |= {"value": value, "source": f"{figure} ({f.get('method')})", "claim": v["claim"]["id"],
                        "verdict": v["verdict"], "period": list(v.get("inputs", {}).get("period", period))}
                if row["period"] != list(period):
                    row["note"] = "computed for the claim period, which differs from the report period"
        rows.append(row)
    return rows
