"""The dashboard's entry point: ``streamlit run dashboard/app.py`` (what ``wattproof dashboard`` starts).

Owns: the login (streamlit-authenticator, passwords checked against the bcrypt hashes of the config
file; no plain text anywhere) and the navigation: every page is registered, the sidebar links only
those the user's role may see, and each page refuses a role it is not for (``common.guard``), so a
typed URL gets the refusal, not the page. Must not: query the store.
"""

from __future__ import annotations

import streamlit as st
import streamlit_authenticator as stauth

from dashboard.auth import ALLOWED, PAGES
from dashboard.common import ICONS, TITLES, role, settings

st.set_page_config(page_title="wattproof", page_icon=":material/verified:", layout="wide")

s = settings()
authenticator = stauth.Authenticate(s.cfg.credentials(), s.cfg.cookie_name, s.cfg.cookie_key,
                                    s.cfg.cookie_expiry_days, auto_hash=False, login_sleep_time=0)
if not st.session_state.get("authentication_status"):
    st.title("wattproof")
    st.caption("Is this organisation's green claim backed by tamper-evident metered data?")
try:
    authenticator.login(location="main",
                        fields={"Form name": "Log in", "Username": "Username", "Password": "Password",
                                "Login": "Log in"})
except stauth.LoginError as exc:
    st.error(str(exc))
    st.stop()

status = st.session_state.get("authentication_status")
if status is False:
    st.error("Username or password is incorrect.")
    st.stop()
if not status:
    st.stop()

r = role()
may = ALLOWED.get(r or "", frozenset())
if not may:
    st.error(f"Your login has no known role ({r!r}); ask the administrator.")
    st.stop()
first = next(p for p in PAGES if p in may)
pages = {p: st.Page(f"pages/{p}.py", title=TITLES[p], icon=ICONS[p], url_path=p, default=(p == first))
         for p in PAGES}
current = st.navigation(list(pages.values()), position="hidden")
with st.sidebar:
    st.markdown(f"**wattproof** · {st.session_state.get('name')} ({r})")
    for p in PAGES:
        if p in may:
            st.page_link(pages[p], label=TITLES[p], icon=ICONS[p])
    st.caption("Read-only view of the store and the ledger.")
    authenticator.logout("Log out", location="sidebar")
current.run()
