"""dashboard: the Streamlit pages for sustainability officers and auditors (a later issue)."""
