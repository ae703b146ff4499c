"""dashboard: the Streamlit dashboard for sustainability officers, auditors, regulators and admins.

Pages (``dashboard/pages/``): Overview, Site, Findings, Claims, Ledger, Reports; entry point
``dashboard/app.py`` (login and navigation), served by ``wattproof dashboard`` (``dashboard/server.py``).
``dashboard/queries.py`` is the only place with SQL — plain functions the pages (through the caches of
``dashboard/cache.py``) and the CLI share; every session is read-only. ``dashboard/auth.py`` owns the
config file, the bcrypt-hashed logins and which role sees which page. Spec: docs/dashboard.md.
Must not: write to the store (the Reports page's report generation is audit.reports' one append).
"""
