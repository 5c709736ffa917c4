"""BiLAF Studio: the router and frame. Pages live in views/ (wired here by st.navigation,
not auto-discovered), computation in bilaf_core. The sidebar, the link's warning and the
page's URL are written before the page runs (from what the previous run left: a slow page,
Compare computing its settings, showed none of them for a minute) and again after it, so
they show what the page just did."""

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
        frame = st.empty()
    # torch's imports overlap the first page's feature loading. Started only after the first
    # element: Streamlit's first element walks the call stack (inspect.stack, a check for a
    # REPL), which beside a thread importing torch took 1.2 s instead of 0.06 s.
    state.preload_stage1()

    def write_frame(*, done: bool) -> None:
        """The sidebar's lines, the link's warning (its Dismiss button once the page is
        ``done``: a widget's key is written once a run) and the address."""
        source = state.current_source()
        with frame.container():
            loaded = state.loaded_feature_set(source)  # the backbone used: DINO falls back offline
            st.markdown(f"**Data** {source.label}  \n**Features** {jobs.features_line(source, loaded)}")
            st.markdown(session.run_line(source))
        unused = session.url_warning(source)
        if unused:  # until dismissed or a setting changes: a rerun (the background map arriving) keeps it
            with notices.container():
                st.warning(unused)
                if done:
                    st.button("Dismiss", key="dismiss_link_warning", on_click=session.dismiss_url_warning,
                              args=(source,))
        elif done:
            notices.empty()  # dismissed, or a setting changed, while the page ran
        session.write_url(source)

    # Before the page too: a reload at any moment, even while a slow page is still running,
    # reopens the same settings.
    write_frame(done=False)
    try:
        page.run()
    except session.Halt:
        pass
    except Exception:  # a page's own error: Streamlit shows it; the sidebar and the URL still follow the state
        write_frame(done=True)
        raise
    write_frame(done=True)


# Streamlit runs this script as __main__. The maps' background worker process ("spawn")
# imports the main module again, as __mp_main__: there the app must not run (it ran the
# whole default page bare, before the worker's first map, with a warning per Streamlit
# call), nor import the app's state (its caches warn that there is no Streamlit runtime).
if __name__ == "__main__":
    main()
