"""BiLAF Studio: the router and frame. Pages live in views/ (wired here by st.navigation,
not auto-discovered), computation in bilaf_core. The sidebar and the page's URL are
written after the page has run, so they show what the page just did."""

from pathlib import Path

import streamlit as st


def main() -> None:
    from studio import jobs, session, state  # here, not above: see the end of this file

    # A local icon: a material-symbol icon is fetched from Google's font server, which an
    # offline machine cannot reach (a console error on every page).
    st.set_page_config(page_title="BiLAF Studio", page_icon=str(Path(__file__).parent / "assets" / "icon.png"),
                       layout="wide")
    page = st.navigation([
        st.Page("views/data.py", title="Data", icon=":material/database:"),
        st.Page("views/select.py", title="Select", icon=":material/scatter_plot:", default=True),
        st.Page("views/inspect.py", title="Inspect", icon=":material/photo_library:"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("views/finetune.py", title="Finetune", icon=":material/model_training:"),
        st.Page("views/learn.py", title="Learn", icon=":material/school:"),
    ])
    if "source" not in st.session_state:  # a new session: a reload or a shared link reopens its source and settings
        session.restore_from_url()
    notices = st.empty()  # written after the page: what of the link's settings the page could not use
    with st.sidebar:
        st.markdown("### BiLAF Studio")
        st.caption("Choose which images to label before finetuning.")
        frame = st.container()
    # torch's imports overlap the first page's feature loading. Started only after the first
    # element: Streamlit's first element walks the call stack (inspect.stack, a check for a
    # REPL), which beside a thread importing torch took 1.2 s instead of 0.06 s.
    state.preload_stage1()

    def write_frame() -> None:
        source = state.current_source()
        with frame:
            loaded = state.loaded_feature_set(source)  # the backbone used: DINO falls back offline
            st.markdown(f"**Data** {source.label}  \n**Features** {jobs.features_line(source, loaded)}")
            st.markdown(session.run_line(source))
        unused = session.url_warning(source)
        if unused:  # until dismissed or a setting changes: a rerun (the background map arriving) keeps it
            with notices.container():
                st.warning(unused)
                st.button("Dismiss", key="dismiss_link_warning", on_click=session.dismiss_url_warning, args=(source,))
        session.write_url(source)

    # The address is written before the page runs too (from what the previous run left), so a
    # reload at any moment, even while a slow page is still running, reopens the same settings.
    session.write_url(state.current_source())
    try:
        page.run()
    except session.Halt:
        pass
    except Exception:  # a page's own error: Streamlit shows it; the sidebar and the URL still follow the state
        write_frame()
        raise
    write_frame()


# Streamlit runs this script as __main__. The maps' background worker process ("spawn")
# imports the main module again, as __mp_main__: there the app must not run (it ran the
# whole default page bare, before the worker's first map, with a warning per Streamlit
# call), nor import the app's state (its caches warn that there is no Streamlit runtime).
if __name__ == "__main__":
    main()
