"""The dashboard's configuration file, its logins and what each role may see.

Owns: ``dashboard.toml`` (docs/dashboard.md) — the store, the ledger and the trust file the Ledger
page verifies proofs against, the login cookie's secret, and the users, each with a role and a
bcrypt hash of their password (``streamlit-authenticator``'s ``Hasher``; a password that is not a
bcrypt hash is refused when the file is loaded, so plain text never works) — and the role → pages
table. Must not: import streamlit at module level (the CLI writes the file without it), or write
anything but the config file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.errors import WattproofError

ROLES = ("officer", "auditor", "regulator", "admin")
PAGES = ("overview", "site", "findings", "claims", "ledger", "reports")
#: What each role may open. A regulator sees claim verdicts and reports only; the others everything,
#: read-only (nothing in the dashboard writes to the store, whoever is logged in).
ALLOWED: dict[str, frozenset[str]] = {
    "officer": frozenset(PAGES),
    "auditor": frozenset(PAGES),
    "admin": frozenset(PAGES),
    "regulator": frozenset({"claims", "reports"}),
}
USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
MIN_PASSWORD = 8


class DashboardConfigError(WattproofError, ValueError):
    """A dashboard config file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class DashboardConfig:
    path: Path
    db: str | None = None
    ledger: str = "local"  # local | fabric
    ledger_path: Path | None = None  # local ledger directory, or a Fabric network profile.json
    trust: Path | None = None  # wattproof-trust/1 file the Ledger page verifies proofs against
    weather: Path | None = None  # hourly temperature CSV (site,timestamp,temperature_c): the Site page's baseline
    reports_dir: Path | None = None  # where the Reports page writes reports (default: beside the config file)
    cookie_name: str = "wattproof_dashboard"
    cookie_key: str = ""
    cookie_expiry_days: float = 1.0
    users: dict[str, User] = field(default_factory=dict)

    def credentials(self) -> dict[str, Any]:
        """The ``credentials`` mapping streamlit-authenticator takes (hashes only; a fresh copy)."""
        return {"usernames": {u.username: {"name": u.name, "email": f"{u.username}@dashboard.invalid",
                                           "password": u.password_hash, "roles": [u.role]}
                              for u in self.users.values()}}


def allowed(role: str | None, page: str) -> bool:
    return role is not None and page in ALLOWED.get(role, frozenset())


def hash_password(password: str) -> str:
    from streamlit_authenticator.utilities.hasher import Hasher

    return Hasher.hash(password)


def _path(base: Path, value: Any, where: str) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DashboardConfigError(f"{where}: expected a path (string)")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base.parent / p)


def load_config(path: Path) -> DashboardConfig:
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise DashboardConfigError(f"{path}: cannot read the dashboard config ({exc.strerror}); create it with "
                                   "`wattproof dashboard users add NAME --role ROLE --config FILE`") from None
    except tomllib.TOMLDecodeError as exc:
        raise DashboardConfigError(f"{path}: not TOML ({exc})") from None
    unknown = set(doc) - {"dashboard", "cookie", "users"}
    if unknown:
        raise DashboardConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    d, c = doc.get("dashboard", {}), doc.get("cookie", {})
    bad = set(d) - {"db", "ledger", "ledger_path", "trust", "weather", "reports_dir"}
    if bad:
        raise DashboardConfigError(f"{path}: [dashboard]: unknown field(s) {sorted(bad)}")
    if d.get("ledger", "local") not in ("local", "fabric"):
        raise DashboardConfigError(f"{path}: [dashboard] ledger: expected 'local' or 'fabric'")
    key = c.get("key", "")
    if not isinstance(key, str) or len(key) < 32:
        raise DashboardConfigError(f"{path}: [cookie] key: expected a random secret of at least 32 characters")
    users = {}
    for name, u in doc.get("users", {}).items():
        where = f"{path}: [users.{name}]"
        if not USERNAME.match(name):
            raise DashboardConfigError(f"{where}: a user name is 1-32 of a-z 0-9 _ . - starting with a letter")
        if set(u) - {"name", "role", "password"}:
            raise DashboardConfigError(f"{where}: unknown field(s) {sorted(set(u) - {'name', 'role', 'password'})}")
        if u.get("role") not in ROLES:
            raise DashboardConfigError(f"{where} role: expected one of {', '.join(ROLES)}, got {u.get('role')!r}")
        pw = u.get("password")
        if not isinstance(pw, str) or not BCRYPT.match(pw):
            raise DashboardConfigError(f"{where} password: not a bcrypt hash — passwords are never kept in plain "
                                       "text; set it with `wattproof dashboard users add`")
        users[name] = User(name, str(u.get("name") or name), u["role"], pw)
    return DashboardConfig(path=Path(path), db=d.get("db") or None, ledger=d.get("ledger", "local"),
                           ledger_path=_path(path, d.get("ledger_path"), f"{path}: [dashboard] ledger_path"),
                           trust=_path(path, d.get("trust"), f"{path}: [dashboard] trust"),
                           weather=_path(path, d.get("weather"), f"{path}: [dashboard] weather"),
                           reports_dir=_path(path, d.get("reports_dir"), f"{path}: [dashboard] reports_dir"),
                           cookie_name=str(c.get("name", "wattproof_dashboard")), cookie_key=key,
                           cookie_expiry_days=float(c.get("expiry_days", 1.0)), users=users)


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def save_config(cfg: DashboardConfig) -> None:
    """Write the file (mode 0600: it holds the cookie secret and the password hashes)."""
    lines = ["# wattproof dashboard (docs/dashboard.md). Passwords are bcrypt hashes: set them with",
             "# `wattproof dashboard users add NAME --role ROLE --config THIS_FILE` (password read from stdin).",
             "[dashboard]"]
    for k, v in (("db", cfg.db), ("ledger", cfg.ledger), ("ledger_path", cfg.ledger_path), ("trust", cfg.trust),
                 ("weather", cfg.weather), ("reports_dir", cfg.reports_dir)):
        if v is not None:
            lines.append(f"{k} = {_toml_str(str(v))}")
    lines += ["", "[cookie]", f"name = {_toml_str(cfg.cookie_name)}", f"key = {_toml_str(cfg.cookie_key)}",
              f"expiry_days = {float(cfg.cookie_expiry_days)!r}"]
    for u in cfg.users.values():
        lines += ["", f"[users.{u.username}]", f"name = {_toml_str(u.name)}", f"role = {_toml_str(u.role)}",
                  f"password = {_toml_str(u.password_hash)}"]
    tmp = cfg.path.with_suffix(cfg.path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, cfg.path)


def new_config(path: Path, db: str | None = None, ledger: str = "local", ledger_path: Path | None = None,
               trust: Path | None = None, weather: Path | None = None,
               reports_dir: Path | None = None) -> DashboardConfig:
    """A config with a fresh cookie secret and no users (refuses to overwrite an existing file)."""
    path = Path(path)
    if path.exists():
        raise DashboardConfigError(f"{path}: exists already")
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = DashboardConfig(path=path, db=db, ledger=ledger, ledger_path=ledger_path, trust=trust, weather=weather,
                          reports_dir=reports_dir, cookie_key=secrets.token_hex(32))
    save_config(cfg)
    return cfg


def add_user(path: Path, username: str, role: str, password: str, name: str | None = None) -> User:
    """Add (or replace) a login: the password is stored as its bcrypt hash only."""
    if not USERNAME.match(username):
        raise DashboardConfigError(f"user name {username!r}: 1-32 of a-z 0-9 _ . - starting with a letter")
    if role not in ROLES:
        raise DashboardConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise DashboardConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    cfg = load_config(path) if Path(path).exists() else new_config(path)
    user = User(username, name or username, role, hash_password(password))
    save_config(DashboardConfig(**{**cfg.__dict__, "users": {**cfg.users, username: user}}))
    return user


def remove_user(path: Path, username: str) -> None:
    cfg = load_config(path)
    if username not in cfg.users:
        raise DashboardConfigError(f"{path}: no user {username!r}")
    save_config(DashboardConfig(**{**cfg.__dict__, "users": {k: v for k, v in cfg.users.items() if k != username}}))
