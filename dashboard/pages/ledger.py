"""Ledger: sealed batches and their anchor receipts; pick a reading and see its inclusion proof
verified here (``export_bundle`` + ``verify_bundle`` against the trust the operator configured; without
one: self-consistent only), and download its proof bundle."""

import base64
import json

import streamlit as st

from dashboard import cache
from dashboard import queries as q
from dashboard.common import guard
from ledger.proofs import NOT_VERIFIED

s = guard("ledger")
st.title("Ledger")

sites = cache.sites(s.dsn)
wanted = st.session_state.get("ledger_batch")
site_ids = sites["site_id"].tolist()
default_site = wanted.split(":")[0] if wanted and wanted.split(":")[0] in site_ids else (site_ids[0] if site_ids else None)
site = st.selectbox("Site", site_ids, index=site_ids.index(default_site) if default_site else 0, key="l_site")
batches = cache.batches(s.dsn, site, None, None)
if batches.empty:
    st.info(f"No sealed batches for {site} yet: run `wattproof anchor`.")
    st.stop()
c = st.columns(3)
c[0].metric("Batches", len(batches))
c[1].metric("Readings sealed", f"{int(batches['leaf_count'].sum()):,}")
c[2].metric("Backend", ", ".join(sorted(batches["backend"].dropna().unique())))
st.dataframe(batches.drop(columns=["receipt"]), hide_index=True, width="stretch", key="batches_table")

ids = batches["batch_id"].tolist()
batch_id = st.selectbox("Batch", ids, index=ids.index(wanted) if wanted in ids else 0, key="l_batch")
row = batches[batches["batch_id"] == batch_id].iloc[0]
with st.expander("Anchor receipt"):
    st.json(json.loads(row["receipt"]))
leaves = cache.batch_leaves(s.dsn, batch_id)
st.markdown(f"**Readings sealed in {batch_id}** ({len(leaves)} shown of {int(row['leaf_count'])})")
st.dataframe(leaves, hide_index=True, width="stretch", key="leaves_table")
if leaves.empty:
    st.stop()
keys = [(r.device_id, int(r.seq), int(r.idx)) for r in leaves.itertuples()]
key = st.selectbox("Reading (device, seq, idx)", keys, format_func=lambda k: f"{k[0]} · seq {k[1]} · idx {k[2]}",
                   key="l_reading")

st.subheader("Inclusion proof, verified")
trust_path = s.cfg.trust
try:
    trust = cache.trust(trust_path)
    backend = cache.ledger(s.cfg.ledger, s.cfg.ledger_path, trust_path)
    raw, problems, n = q.proof_of_reading(s.dsn, backend, key[0], row["window_start"], row["window_end"], trust)
except Exception as exc:  # noqa: BLE001 — a ledger or store problem is shown as what it is, not a traceback
    st.error(f"No proof: {exc}")
    st.stop()
bundle = json.loads(raw)
mine = None
for b in bundle["batches"]:
    if json.loads(b["header"])["batch_id"] != batch_id:
        continue
    for r in b["readings"]:
        leaf = json.loads(base64.b64decode(r["leaf_b64"]))
        if (leaf["device"], leaf["seq"], leaf["idx"]) == key:
            mine = (leaf, r)
if not problems:
    st.success(f"Verified: the reading is included under the anchored root of {batch_id}, the operator's signature "
               f"on the ledger record checks against the pinned key, and its signed frame against the pinned "
               f"device key ({n} readings of {key[0]} in this bundle, all verified against {trust_path}).",
               icon=":material/verified:")
elif problems == [NOT_VERIFIED]:
    st.warning("Self-consistent only: no trust file is configured (`trust` in the dashboard config), so the keys "
               "the bundle shows are hints, not checked against keys you pin. The proof itself rebuilds its root.")
else:
    st.error("NOT verified:\n\n" + "\n".join(f"- {p}" for p in problems[:20]))
if mine is not None:
    leaf, proof = mine
    st.markdown(f"Leaf {proof['leaf_index']} of {proof['tree_size']}, audit path of {len(proof['audit_path'])} "
                f"hashes, root `{proof['root']}`")
    st.json({"leaf": leaf, "audit_path": proof["audit_path"]}, expanded=False)
st.download_button("Download the proof bundle", raw, file_name=f"proof-{key[0]}-{batch_id.replace(':', '_')}.json",
                   mime="application/json", key="l_download")
st.caption("Check it offline: `wattproof verify-proof BUNDLE --trust trust.json`, or with any RFC 6962 "
           "implementation (docs/proofs.md).")
