"""Regulator reports: a period's figures, claim verdicts, findings, coverage and anchoring for one
organisation, as PDF, CSV, Parquet and JSON, with a signed and anchored manifest that a regulator
checks offline (docs/reports.md).

Public API (what the CLI and the dashboard call):

    build_report(dsn, backend, org, period_from_ms, period_to_ms, formats, out_dir, claim_file=None,
                 *, inputs=None, sites=None, signing_key=None, now_ms=None) -> ReportSummary
    verify_report(directory, trust=None) -> ReportCheck        # offline; trust = ledger.trust.Trust

Modules: ``gather`` (reads the store and the ledger), ``figures`` (energy totals, pure), ``esrs`` (the
ESRS E1 table, pure), ``tables`` (CSV/Parquet/JSON files), ``pdf`` (reportlab), ``manifest`` (file
hashes, signature, anchoring), ``verify`` (the offline check), ``build`` (the orchestration).
Reports read the store and anchor one header of kind ``report`` on the chain ``reports:<org>``;
they never change readings, findings or verdicts.
"""

from audit.reports.build import build_report
from audit.reports.model import FORMATS, ReportError, ReportSummary
from audit.reports.verify import ReportCheck, ReportProblem, verify_report

__all__ = ["FORMATS", "ReportCheck", "ReportError", "ReportProblem", "ReportSummary", "build_report",
           "verify_report"]
