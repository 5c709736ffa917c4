"""BiLAF Studio: the router and frame. Pages live in views/ (wired here by st.navigation,
not auto-discovered), computation in bilaf_core."""

import streamlit as st

from studio import state

st.set_page_config(page_title="BiLAF Studio", page_icon=":material/target:", layout="wide")

with st.sidebar:
    st.markdown("### BiLAF Studio")
    st.caption("Choose which images to label before finetuning.")
    dataset, backbone = state.DEFAULT_DATASET, state.DEFAULT_BACKBONE
    st.session_state.setdefault("dataset", dataset)
    st.session_state.setdefault("backbone", backbone)
    pool = state.pool(st.session_state.dataset)
    st.markdown(f"**Data** {pool.name} · {len(pool):,} images  \n**Features** {st.session_state.backbone}")

page = st.navigation([st.Page("views/select.py", title="Select", icon=":material/scatter_plot:", default=True)])
page.run()
