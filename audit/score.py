"""``audit score``: precision, recall and F1 per fault kind of stored findings against ground truth.

Matching rule (docs/audit.md): a finding matches a truth record when it has the truth's finding
kind, the same device, and its interval overlaps the truth interval widened by ``slack_ms`` on
each side. Precision counts findings of a kind that match some truth record of that kind; recall
counts truth records matched by some finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from firmware_sim.fleet import read_truth


@dataclass(frozen=True)
class KindScore:
    kind: str
    truths: int
    findings: int
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        s = self.precision + self.recall
        return 0.0 if s == 0 else 2 * self.precision * self.recall / s


def score(dsn: str, truth_path: Path, slack_ms: int = 120_000) -> list[KindScore]:
    truth = [t for t in read_truth(truth_path) if t.expect.startswith("finding:")]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT kind, device_id, (extract(epoch FROM start_ts) * 1000)::bigint, "
            "(extract(epoch FROM end_ts) * 1000)::bigint FROM findings").fetchall()
    out = []
    for kind in sorted({t.expect.split(":", 1)[1] for t in truth}):
        ts = [t for t in truth if t.expect == f"finding:{kind}"]
        fs = [r for r in rows if r[0] == kind]

        def hit(f: tuple, t) -> bool:  # type: ignore[type-arg, no-untyped-def]
            return f[1] == t.device and f[2] <= t.end_ms + slack_ms and f[3] >= t.start_ms - slack_ms

        tp_f = sum(1 for f in fs if any(hit(f, t) for t in ts))
        tp_t = sum(1 for t in ts if any(hit(f, t) for f in fs))
        out.append(KindScore(kind, len(ts), len(fs), tp_f / len(fs) if fs else 0.0, tp_t / len(ts) if ts else 0.0))
    return out


@dataclass(frozen=True)
class OtherFindings:
    """Findings of a kind the truth does not list (e.g. ``missing_frames``, ``energy_imbalance``)."""

    kind: str
    findings: int
    near_injected_fault: int  # how many overlap an injected fault on the same site (± slack)


def other_findings(dsn: str, truth_path: Path, slack_ms: int = 3_600_000) -> list[OtherFindings]:
    """Count findings of kinds absent from the truth, and how many an injected fault explains.

    A fault on one meter legitimately breaks cross-checks between meters (the site balance, register
    vs. power), so these are matched by site, not device, with an hour of slack either side (an
    hourly check's window starts up to an hour before the fault).
    """
    truth = read_truth(truth_path)
    kinds = {t.expect.split(":", 1)[1] for t in truth if t.expect.startswith("finding:")}
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT kind, site_id, (extract(epoch FROM start_ts) * 1000)::bigint, "
            "(extract(epoch FROM end_ts) * 1000)::bigint FROM findings WHERE NOT kind = ANY(%s)",
            (sorted(kinds),)).fetchall()
    out = []
    for kind in sorted({r[0] for r in rows}):
        fs = [r for r in rows if r[0] == kind]
        near = sum(1 for f in fs if any(t.site == f[1] and f[2] <= t.end_ms + slack_ms and f[3] >= t.start_ms - slack_ms
                                        for t in truth))
        out.append(OtherFindings(kind, len(fs), near))
    return out
