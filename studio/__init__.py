"""App-side helpers for BiLAF Studio (Streamlit); all computation is in bilaf_core."""
