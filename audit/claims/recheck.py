#!/usr/bin/env python3
"""Re-check a wattproof claims evidence bundle with the Python standard library alone (no database,
no wattproof, no third-party package): ``python3 recheck.py BUNDLE_DIR [--operator-key KEY.pem]``.

It checks that the verdicts' figures rest on every anchored reading of their periods, then recomputes
every figure from those readings:

1. every header is one canonical JSON spelling; each site's headers form one hash chain from genesis
   to the head the verdict set's context names (no header left out, none added after);
2. every batch of every window the figures use comes with its leaves, which rebuild the batch's RFC 6962
   root and count; each leaf lies in its batch's window;
3. the verdict leaves rebuild the verdict set's root, the context its digest, and the context lists
   exactly the batches of those windows;
4. hourly energy per site is rebuilt from the leaves (docs/claims.md, "Hourly energy") and every figure
   of every verdict recomputed from it and the verdict's anchored inputs; each must agree (1e-9).

Authenticity of the headers themselves: with ``--operator-key`` (the operator's Ed25519 public key, PEM,
obtained out of band) each local-ledger record signature is checked by the ``openssl`` command; Fabric
receipts and device signatures need ``wattproof claims verify-evidence --trust``. Exit 0: all checks
passed; 1: a check failed (each failure printed); 2: the bundle cannot be read.
This file is printed in docs/claims.md; the test suite runs that copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import subprocess
import sys
import tempfile

GENESIS = "0" * 64
HOUR = 3_600_000
FORMAT = "wattproof-claims-evidence/1"
REL, ABS = 1e-9, 1e-6


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def mth(leaves):
    """RFC 6962 Merkle Tree Hash of a list of leaf byte strings."""
    level = [hashlib.sha256(b"\x00" + x).digest() for x in leaves]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    return _mth_of_hashes(level).hex()


def _mth_of_hashes(hs):
    if len(hs) == 1:
        return hs[0]
    k = 1
    while k * 2 < len(hs):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth_of_hashes(hs[:k]) + _mth_of_hashes(hs[k:])).digest()


def leaf_bytes(device, seq, idx, ts, channel, energy, power, frame_sha):
    return canon({"channel": channel, "device": device, "energy_wh": energy, "frame_sha256": frame_sha,
                  "idx": idx, "power_w": power, "seq": seq, "ts_ms": ts, "v": 1})


class Checker:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print("FAIL", msg)

    def same(self, what, got, want):
        if isinstance(want, (int, float)) and isinstance(got, (int, float)):
            if math.isclose(got, want, rel_tol=REL, abs_tol=ABS):
                return True
        elif got == want:
            return True
        self.fail(f"{what}: recomputed {got!r}, the bundle says {want!r}")
        return False


def check_headers(ck, lines, heads, operator_key):
    """Canonical headers, per-site hash chains from genesis to the context's heads; returns batch headers."""
    by_site, batches = {}, {}
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        raw = rec["header"].encode()
        h = json.loads(raw)
        if canon(h) != raw:
            ck.fail(f"headers.jsonl:{n}: header {h.get('batch_id')} is not canonical JSON")
        hh = sha(raw)
        chain = by_site.setdefault(h["site"], [])
        prev = chain[-1] if chain else GENESIS
        if h["prev_hash"] != prev:
            ck.fail(f"headers.jsonl:{n}: {h['batch_id']} does not chain on the site's previous header "
                    f"(a header is missing or out of order)")
        chain.append(hh)
        check_receipt(ck, rec["receipt"], hh, f"headers.jsonl:{n}: {h['batch_id']}", operator_key)
        batches[h["batch_id"]] = (h, hh)
    for site, head in heads.items():
        got = by_site.get(site, [GENESIS])[-1]
        if got != head:
            ck.fail(f"site {site}: the bundle's chain ends at {got[:12]}…, the verdict set names head {head[:12]}…")
    return batches


def check_receipt(ck, r, hh, what, operator_key):
    """A receipt names this header, and a local record hash is recomputed from it (the operator signs the
    record hash: a signature lifted from another record proves nothing here)."""
    if r.get("header_hash") != hh:
        ck.fail(f"{what}: its receipt is for another header")
    if r.get("backend") == "local":
        want = sha(canon({"header_hash": hh, "position": r.get("ref"), "prev_record": r.get("prev_record")}))
        if r.get("record_hash") != want:
            ck.fail(f"{what}: its record hash does not recompute from the header")
        elif operator_key:
            check_signature(ck, operator_key, bytes.fromhex(want), r["signature"], what)


def check_signature(ck, key_pem, message, sig_b64url, what):
    import base64

    sig = base64.urlsafe_b64decode(sig_b64url + "=" * (-len(sig_b64url) % 4))
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, n) for n in ("m", "s")]
        for p, data in zip(paths, (message, sig), strict=False):
            with open(p, "wb") as fh:
                fh.write(data)
        res = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", key_pem, "-rawin",
                              "-in", paths[0], "-sigfile", paths[1]], capture_output=True)
    if res.returncode != 0:
        ck.fail(f"operator signature of {what} does not verify with the key you pinned")


def check_leaves(ck, batches, leaf_lines, windows):
    """Leaves rebuild each batch root; every batch of the windows used is there. Returns readings."""
    readings, seen = [], set()
    for line in leaf_lines:
        rec = json.loads(line)
        bid = rec["batch_id"]
        if bid not in batches:
            ck.fail(f"leaves of {bid}: no such header in the bundle")
            continue
        h, _ = batches[bid]
        frames = rec["frames"]
        leaves = []
        for fi, idx, ts, ch, e, p in rec["r"]:
            dev, seq, fsha = frames[fi]
            leaves.append(leaf_bytes(dev, seq, idx, ts, ch, e, p, fsha))
            if not h["window_start_ms"] <= ts < h["window_end_ms"]:
                ck.fail(f"batch {bid}: reading {dev}/{seq}/{idx} at {ts} lies outside its window")
            readings.append((dev, ts, ch, e))
        if len(leaves) != h["leaf_count"] or mth(leaves) != h["root"]:
            ck.fail(f"batch {bid}: its {len(leaves)} leaves do not rebuild the anchored root "
                    f"(tree of {h['leaf_count']})")
        seen.add(bid)
    for bid, (h, _) in batches.items():
        if h["kind"] in ("seal", "amendment") and (h["site"], h["window_start_ms"]) in windows and bid not in seen:
            ck.fail(f"batch {bid} of a window the figures use has no leaves in the bundle")
    return readings


# --- hourly energy (docs/claims.md "Hourly energy"; audit/claims/load.py) ------------------------------

def hourly(readings, devices, site, start, hours):
    """SiteHours of one site as lists: import, export, pv (None = unknown) and coverage."""
    regs = {}  # (device, channel) -> {hour: [max register, count]}; hour < 0: before the period
    roles = {"main_meter": ("import", "export"), "pv_inverter": ("pv",)}
    for dev, ts, ch, e in readings:
        d = devices.get(dev)
        if d is None or d["site"] != site or ch not in roles.get(d["kind"], ()):
            continue
        h = (ts - start) // HOUR
        if h >= hours:
            continue
        cell = regs.setdefault((dev, ch), {}).setdefault(h, [e, 0])
        cell[0] = max(cell[0], e)
        cell[1] += 1
    series = {}
    for (dev, ch), per in regs.items():
        before = [h for h in per if h < 0]
        prev = per[max(before)][0] if before else None
        counts = [per[h][1] for h in per if h >= 0]
        freq = {}
        for c in counts:
            freq[c] = freq.get(c, 0) + 1
        expected = max((c for c in freq if freq[c] == max(freq.values())), default=0)
        energy, cov = [None] * hours, [0.0] * hours
        for h in range(hours):
            if h in per:
                reg, n = per[h]
                if prev is not None and reg - prev >= 0:
                    energy[h] = float(reg - prev)
                    cov[h] = min(n / expected, 1.0)
                prev = reg
        series[(dev, ch)] = (energy, cov)

    def total(kind, ch):
        keys = [(d, ch) for d in sorted(devices) if devices[d]["site"] == site and devices[d]["kind"] == kind]
        if not keys:
            return None, []
        out = [None if any(k not in series or series[k][0][h] is None for k in keys)
               else sum(series[k][0][h] for k in keys) for h in range(hours)]
        return out, keys

    imp, imp_d = total("main_meter", "import")
    exp, exp_d = total("main_meter", "export")
    pv, pv_d = total("pv_inverter", "pv")
    imp = imp or [None] * hours
    exp = exp or [None] * hours
    pv = pv if pv is not None else [0.0] * hours
    used = imp_d + exp_d + pv_d
    cov = [min(series[k][1][h] if k in series else 0.0 for k in used) if imp_d else 0.0 for h in range(hours)]
    return {"import": imp, "export": exp, "pv": pv, "coverage": cov}


def aggregate(sites, hours):
    ok = [[s["import"][h] is not None and s["export"][h] is not None and s["pv"][h] is not None
           for h in range(hours)] for s in sites]
    out = {k: [] for k in ("import", "export", "pv")}
    for h in range(hours):
        any_ok = any(o[h] for o in ok)
        for k in out:
            out[k].append(sum(s[k][h] for s, o in zip(sites, ok, strict=False) if o[h]) if any_ok else None)
    w = []
    for s, o in zip(sites, ok, strict=False):
        hk = sum(o)
        cons = sum(s["import"][h] - s["export"][h] + s["pv"][h] for h in range(hours) if o[h])
        w.append(max(cons / max(hk, 1), 0.0) if hk > 0 else None)
    have = [x for x in w if x is not None]
    w = [x if x is not None else (sum(have) / len(have) if have else 0.0) for x in w]
    if sum(w) <= 0:
        w = [1.0] * len(w)
    out["coverage"] = [sum(wi * (s["coverage"][h] if o[h] else 0.0) for wi, s, o in zip(w, sites, ok, strict=False)) / sum(w)
                       for h in range(hours)]
    return out


def known(org, h):
    return org["import"][h] is not None and org["export"][h] is not None and org["pv"][h] is not None


def cons(org, h):
    return org["import"][h] - org["export"][h] + org["pv"][h]


def self_c(org, h):
    return min(max(org["pv"][h] - org["export"][h], 0.0), org["pv"][h])


# --- figures (docs/claims.md "Methods"; audit/claims/compute.py) ---------------------------------------

def figures(org, hours, inputs):
    """The figures a verdict's inputs call for, by name: {name: (value, {total: value})}."""
    ks = [h for h in range(hours) if known(org, h)]
    out = {}
    c = sum(cons(org, h) for h in ks)
    grid = sum(org["import"][h] for h in ks)
    s = sum(self_c(org, h) for h in ks)
    pos = [max(cons(org, h), 0.0) if known(org, h) else None for h in range(hours)]
    expected = sum(p for p in pos if p is not None) / len(ks) if ks else 0.0
    wts = [p if p is not None else expected for p in pos]
    cov = [min(max(org["coverage"][h], 0.0), 1.0) if known(org, h) else 0.0 for h in range(hours)]
    out["coverage_energy_weighted"] = (sum(a * b for a, b in zip(cov, wts, strict=False)) / sum(wts) if sum(wts) > 0
                                       else sum(cov) / max(hours, 1), {})
    if "certificates_wh" in inputs:
        applied = min(inputs["certificates_wh"], grid)
        out["renewable_share_annual"] = ((applied + s) / c, {"consumption_wh": c, "grid_import_wh": grid,
                                                             "self_consumed_wh": s,
                                                             "certificates_applied_wh": applied})
    if "cert_supply_wh" in inputs:
        q = inputs["cert_supply_wh"]
        matched = sum(min(cons(org, h), self_c(org, h) + q[h]) for h in ks)
        out["renewable_share_hourly"] = (matched / c, {"consumption_wh": c, "matched_wh": matched})
    if "intensity_g_per_kwh" in inputs:
        ci = inputs["intensity_g_per_kwh"]
        g = sum(org["import"][h] * ci[h] for h in ks) / 1e3
        out["scope2_location"] = (g / 1e6, {"grid_import_wh": grid, "emissions_g": g})
    if "remainder_factor_g_per_kwh" in inputs:
        applied = min(inputs.get("market_certificates_wh", 0.0), grid)
        g = (applied * inputs.get("certificate_factor_g_per_kwh", 0.0)
             + (grid - applied) * inputs["remainder_factor_g_per_kwh"]) / 1e3
        out["scope2_market"] = (g / 1e6, {"grid_import_wh": grid, "certificates_applied_wh": applied,
                                          "emissions_g": g})
    if inputs.get("onsite"):
        pv_ks = [h for h in range(hours) if org["pv"][h] is not None]
        sc_ks = [h for h in pv_ks if org["export"][h] is not None]
        out["onsite_produced"] = (sum(org["pv"][h] for h in pv_ks) / 1e6, {})
        out["onsite_self_consumed"] = (sum(self_c(org, h) for h in sc_ks) / 1e6, {})
    if "savings_predicted_wh" in inputs:  # savings: the baseline's prediction is an anchored input
        pred = inputs["savings_predicted_wh"]
        metered = sum(cons(org, h) for h in ks)
        out["savings_metered"] = (metered / 1e6, {"metered_wh": metered, "predicted_wh": pred})
        out["savings_fraction"] = ((pred - metered) / pred, {})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--operator-key", help="the operator's Ed25519 public key (PEM), pinned out of band")
    a = ap.parse_args(argv)
    try:
        with open(os.path.join(a.bundle, "manifest.json"), "rb") as fh:
            manifest = json.load(fh)
        with open(os.path.join(a.bundle, "headers.jsonl"), "rb") as fh:
            header_lines = fh.read().splitlines()
        with lzma.open(os.path.join(a.bundle, "leaves.jsonl.xz"), "rb") as fh:
            leaf_lines = fh.read().splitlines()
        if manifest.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} bundle")
    except (OSError, ValueError, lzma.LZMAError) as exc:
        print(f"cannot read the bundle: {exc}")
        return 2
    ck = Checker()
    vs = manifest["verdict_set"]
    vh_raw = vs["header"].encode()
    vh = json.loads(vh_raw)
    if canon(vh) != vh_raw:
        ck.fail("the verdict set header is not canonical JSON")
    leaves = [v.encode() for v in vs["verdicts"]]
    if mth(leaves) != vh["root"] or len(leaves) != vh["leaf_count"]:
        ck.fail("the verdicts do not rebuild the verdict set's anchored root")
    ctx_raw = vs["context"].encode()
    if sha(ctx_raw) != vh["findings_digest"]:
        ck.fail("the context is not the one the verdict set's header commits to")
    ctx = json.loads(ctx_raw)
    chains = check_headers(ck, header_lines, ctx["heads"], a.operator_key)
    check_receipt(ck, vs["receipt"], sha(vh_raw), f"verdict set {vh.get('batch_id')}", a.operator_key)
    devices = ctx["devices"]
    sites = ctx["sites"]
    verdicts = [json.loads(v) for v in leaves]
    # every period a figure used (reporting, base, baseline), each with the hour before it
    periods = {tuple(p) for p in ctx["periods"]}
    windows = set()
    for s0, s1 in periods:
        windows |= {(site, w) for site in sites for w in range(s0 - HOUR, s1, HOUR)}
    used = {bid: hh for bid, (h, hh) in chains.items()
            if h["kind"] in ("seal", "amendment") and (h["site"], h["window_start_ms"]) in windows}
    stated = {b: hh for b, hh in ctx["batches"]}
    for bid in sorted(set(used) | set(stated)):
        if used.get(bid) != stated.get(bid):
            ck.fail(f"batch {bid}: " + ("anchored in a period window but not listed by the verdict set"
                                        if bid not in stated else "listed by the verdict set but not anchored "
                                        "in a period window (or with another header)"))
    readings = check_leaves(ck, chains, leaf_lines, windows)
    orgs = {}
    for v in verdicts:
        s0, s1 = v["inputs"]["period"]
        hours = (s1 - s0) // HOUR
        if (s0, s1) not in orgs:
            orgs[(s0, s1)] = aggregate([hourly(readings, devices, site, s0, hours) for site in sites], hours)
        org = orgs[(s0, s1)]
        got = figures(org, hours, v["inputs"])
        base = v["inputs"].get("base")
        if base:  # a reduction: the base period's figures too, and the reduction from both
            b0, b1 = base["period"]
            bh = (b1 - b0) // HOUR
            if (b0, b1) not in orgs:
                orgs[(b0, b1)] = aggregate([hourly(readings, devices, site, b0, bh) for site in sites], bh)
            for name, val in figures(orgs[(b0, b1)], bh, base).items():
                got["base_" + name] = val
            method = "location" if "intensity_g_per_kwh" in base else "market"
            cur, old = got.get("scope2_" + method), got.get("base_scope2_" + method)
            if cur and old and old[0] > 0:
                got["scope2_reduction"] = ((old[0] - cur[0]) / old[0], {})
        for name, want in v["figures"].items():
            if name not in got:
                continue
            val, totals = got[name]
            if want["value"] is None:  # a figure the verdict could not compute: nothing to compare
                continue
            ck.same(f"claim {v['claim']['id']}: {name}", val, want["value"])
            for t, x in totals.items():
                ck.same(f"claim {v['claim']['id']}: {name}.{t}", x, want["totals"][t])
        print(f"claim {v['claim']['id']} ({v['claim']['kind']}): {v['verdict']}; "
              f"{len([n for n in v['figures'] if n in got])} figures recomputed")
    n_read = len(readings)
    if ck.failures:
        print(f"{len(ck.failures)} check(s) failed")
        return 1
    print(f"OK: {len(verdicts)} verdicts; every figure recomputed from {n_read} anchored readings in "
          f"{len(used)} batches; {len(header_lines)} headers chained"
          + ("; operator signatures checked" if a.operator_key else "; signatures not checked (--operator-key)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
