"""The Streamlit dashboard (`workbench dashboard`): the only part of workbench that imports streamlit;
nothing else imports it. Pages are scripts that Streamlit runs, listed in app.py."""
