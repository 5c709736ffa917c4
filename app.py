"""BiLAF Studio: the router and frame. Pages live in views/ (wired here by st.navigation,
not auto-discovered), computation in bilaf_core."""

import streamlit as st

from studio import state

st.set_page_config(page_title="BiLAF Studio", page_icon=":material/target:", layout="wide")

pages = [
    st.Page("views/data.py", title="Data", icon=":material/database:"),
    st.Page("views/select.py", title="Select", icon=":material/scatter_plot:", default=True),
    st.Page("views/inspect.py", title="Inspect", icon=":material/photo_library:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/finetune.py", title="Finetune", icon=":material/model_training:"),
    st.Page("views/learn.py", title="Learn", icon=":material/school:"),
]
page = st.navigation(pages)

with st.sidebar:
    st.markdown("### BiLAF Studio")
    st.caption("Choose which images to label before finetuning.")
    source = state.current_source()
    st.markdown(f"**Data** {source.label}  \n**Features** {source.backbone if not source.feature_file else 'from file'}")
    run = st.session_state.get("selection")
    if run is not None:
        st.markdown(f"**Run** {run.params['method']} · B = {run.budget:,}"
                    + (f" · K = {run.params['n_cores']}" if run.params["method"] == "bilaf" else ""))
page.run()
