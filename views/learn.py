"""Learn page: BiLAF step by step on 2-D points, where every step can be seen exactly."""

import time

import numpy as np
import pandas as pd
import streamlit as st

from bilaf_core.boundary import CRITERIA, DENOISERS, PROCESSES, VARIANTS
from bilaf_core.core import CORE_METHODS
from bilaf_core.teaching import TOY_DATASETS, compare_methods, make_toy_dataset, walkthrough
from studio import learn_figures as figures
from studio import session, state

STEPS = ["1 · Cores", "2 · Denoising (IDC)", "3 · Boundary score", "4 · Iterative picks", "5 · Result"]
FEATURE_PCA = "2-D PCA of the current feature set"
#: The page's settings belong to the session: kept when another page is visited and this one comes back.
SETTINGS = session.app_state()


def keep(widget, name, label, default, **kwargs):
    return session.kept(widget, name, label, default=default, state=SETTINGS, **kwargs)


def param_slider(column, name, param):
    """A stage-2 parameter's slider: label, help, range and default from the library's one
    definition, as on the Select page."""
    widget = state.param_widget(param)
    return keep(column.slider, name, widget.pop("label"), state.param_default(param), **widget)


st.title("Learn: BiLAF step by step")
st.caption("On data that is itself 2-D, each step of Algorithm 1 is drawn exactly. The page runs the library's own "
           "stage 1 and stage 2 (with a trace of what stage 2 did); nothing here is re-implemented.")


@st.cache_data(max_entries=16, show_spinner=False)
def toy(name: str, n: int, overlap: float, outliers: float, seed: int):
    return make_toy_dataset(name, n, overlap=overlap, outlier_fraction=outliers, random_state=seed)


@st.cache_data(max_entries=32, show_spinner="Running BiLAF on the points ...")
def run(points: np.ndarray, budget: int, n_cores: int, core_method: str, seed: int, stage2: tuple):
    return walkthrough(points, budget, n_cores=n_cores, core_method=core_method, random_state=seed, **dict(stage2))


@st.cache_data(max_entries=16, show_spinner="Running ActiveFT, K-Means and random with the same budget ...")
def baselines(points: np.ndarray, budget: int, seed: int):
    return compare_methods(points, budget, random_state=seed)


with st.expander("Data: a generated 2-D set, or a projection of your features"):
    a, b, c, d, e = st.columns(5)
    data_name = keep(a.selectbox, "learn_data", "Data set", TOY_DATASETS[0], options=[*TOY_DATASETS, FEATURE_PCA])
    generated = data_name != FEATURE_PCA  # the shape of a generated set; a projection has its own
    n_points = keep(b.slider, "learn_n", "Points", 600, min_value=200, max_value=5000, step=100, disabled=not generated)
    overlap = keep(c.slider, "learn_overlap", "Overlap", 1.0, min_value=0.2, max_value=3.0, step=0.1,
                   help="spread of each class", disabled=not generated)
    outliers = keep(d.slider, "learn_outliers", "Outliers", 0.05, min_value=0.0, max_value=0.3, step=0.01,
                    help="share of uniform noise points", disabled=not generated)
    if not generated:
        st.caption("Points, overlap and outliers shape a generated set; the projection has its own points.")
    data_seed = int(keep(e.number_input, "learn_data_seed", "Data seed", 0, min_value=0, max_value=10_000))
if data_name == FEATURE_PCA:
    source, fs = state.current_feature_set()
    points = state.projection(source, "pca").astype(np.float32)
    if points.shape[0] > 5000:
        shown = np.sort(np.random.default_rng(data_seed).choice(points.shape[0], 5000, replace=False))
        points = points[shown]
    st.info(f"A 2-D PCA of {source.label} ({points.shape[0]:,} points): the real selection works in all "
            "dimensions, so what you see here is BiLAF run on the projection, for intuition only.")
else:
    points, _ = toy(data_name, n_points, overlap, outliers, data_seed)
n = points.shape[0]
if n < 3:
    st.error(f"The feature set has {n} sample(s); the walkthrough needs at least 3. Choose a generated data set.")
    session.halt()  # not st.stop(): app.py still writes the sidebar's frame

with st.expander("Parameters (the Select page's, with values of their own for this 2-D data)"):
    a, b, c, d = st.columns(4)
    budget = int(keep(a.slider, "learn_budget", "Budget B", min(n, 60), min_value=2, max_value=min(n, 400),
                      restore=True))
    chosen = session.held(SETTINGS, "learn_budget")
    if chosen is not None:  # kept, not lost: it comes back with more points
        a.caption(f"B = {chosen} is more than these {n} points allow: using B = {budget}. B = {chosen} comes back "
                  "when there are points enough.")
    n_cores = int(keep(b.slider, "learn_k", state.param_widget("n_cores")["label"], min(8, budget), min_value=1, max_value=min(n, 60)))
    removal_ratio = param_slider(c, "learn_prm", "removal_ratio")
    include_ratio = param_slider(d, "learn_pin", "include_ratio")
    k_neighbors = param_slider(a, "learn_knn", "k_neighbors")
    penalty = param_slider(b, "learn_delta", "opponent_penalty")
    core_method = keep(c.selectbox, "learn_core_method", "Stage-1 core method", "kmeans", options=CORE_METHODS)
    variant = keep(d.selectbox, "learn_variant", "Variant", VARIANTS[0], options=VARIANTS)
    denoise = keep(a.selectbox, "learn_denoise", "Denoiser", DENOISERS[0], options=DENOISERS)
    criterion = keep(b.selectbox, "learn_criterion", "Criterion", CRITERIA[0], options=CRITERIA)
    process = keep(c.selectbox, "learn_process", "Process", PROCESSES[0], options=PROCESSES)
    seed = int(keep(d.number_input, "learn_seed", "Seed", 0, min_value=0, max_value=10_000))
    st.caption("Stage 2 runs on the raw 2-D coordinates; stage 1 on their conformal lift onto a sphere "
               "(L2 normalisation would keep only each point's angle). See bilaf_core.teaching.")

stage2 = (("variant", variant), ("k_neighbors", k_neighbors), ("include_ratio", include_ratio),
          ("removal_ratio", removal_ratio), ("opponent_penalty", penalty), ("denoise", denoise),
          ("criterion", criterion), ("process", process))
if n_cores > budget:  # in the sliders' words (the library's message names n_cores)
    st.error(f"K: cores = {n_cores} is more than the budget B = {budget}: every core is one of the B samples. "
             "Raise the budget or lower K.")
    session.halt()
try:
    result = run(points, budget, n_cores, core_method, seed, stage2)
except ValueError as exc:
    st.error(f"Cannot run BiLAF with these settings: {exc}")
    session.halt()


def move(delta: int, *, wrap: bool = False) -> None:
    """Go ``delta`` steps on; past the last step only with ``wrap`` (Play starts again
    at step 1; Next stops at the last step, it wrapped to step 1 without a word)."""
    at = STEPS.index(st.session_state.learn_step) + delta
    st.session_state.learn_step = STEPS[at % len(STEPS) if wrap else min(max(at, 0), len(STEPS) - 1)]


at_step = STEPS.index(session.pending(SETTINGS, "learn_step", STEPS[0]))  # before the radio is drawn
# One row that wraps where the page is narrow: fixed column widths cut the buttons' labels off.
with st.container(horizontal=True, vertical_alignment="center"):
    st.button("◀ Previous", on_click=move, args=(-1,), key="learn_prev", disabled=at_step == 0)
    st.button("Next ▶", on_click=move, args=(1,), key="learn_next", disabled=at_step == len(STEPS) - 1)
    play = st.toggle("Play", key="learn_play", help="step through the stages on its own, one every 6 s; after the "
                                                    "last, it starts again at step 1")
    keep(st.radio, "learn_step", "Step", STEPS[0], options=STEPS, horizontal=True, label_visibility="collapsed")
if play:
    st.session_state.setdefault("learn_played_at", time.monotonic())

    @st.fragment(run_every="6s")
    def advance():
        # The body also runs on every full rerun: advance only when a step has been shown 6 s.
        if time.monotonic() - st.session_state.learn_played_at >= 5.5:
            st.session_state.learn_played_at = time.monotonic()
            move(1, wrap=True)
            st.rerun(scope="app")

    advance()
else:
    st.session_state.pop("learn_played_at", None)
step = STEPS.index(st.session_state.learn_step) + 1

traces = result.result.traces
allocation = result.result.allocation
if step in (2, 3, 4):
    default_cluster = int(np.argmax(allocation))
    # Keyed by the data and K: another data set starts on its own default cluster.
    cluster = keep(st.selectbox, f"learn_cluster_{data_name}_{n}_{data_seed}_{len(traces)}", "Cluster to follow",
                   default_cluster, options=list(range(len(traces))),
                   format_func=lambda c: f"cluster {c}: {traces[c].members.size} samples, "
                                         f"{traces[c].kept.size} kept, budget {allocation[c]}")

if step == 3:  # over the page's width: the text column cut the formula off
    st.markdown("**The boundary score (paper Eq. 7)** of a sample x of cluster i, against every other core c_l:")
    st.latex(r"BS(x) = \min_{l \ne i} \frac{\delta^{t_l}\, D(x, c_l) - d_{intra}(x)}"
             r"{\max\left(D(x, c_l),\ d_{intra}(x)\right)}")
# Step 3's field and colour bar were squeezed into three fifths of a 900 px page: the page's width, text under it
figure_col, text_col = (st.container(), st.container()) if step == 3 else st.columns([3, 2])
with text_col:
    if step == 1:
        st.markdown(f"""**Stage 1: core samples.** {core_method} picks K = {n_cores} cores (stars), the centres of
pseudo-classes. ActiveFT (the default on real data) moves K parameters to match the pool's distribution
(ActiveFT paper, Eq. 9-13); K-Means takes the samples nearest the centroids; FDS the farthest points; random any.

Every sample then joins the cluster of its **nearest core** (shaded regions): these pseudo-classes are what
stage 2 works inside. Budgets are spread over them in proportion to their size after denoising
(Alg. 1, step 3): here {", ".join(f"c{c}: {u}" for c, u in enumerate(allocation))}.""")
    elif step == 2:
        t = traces[cluster]
        st.markdown(f"""**Denoising by iterative density-based clustering (IDC, Sec. 3.2).** In each cluster the
included set U grows from the core: round 1 takes the m = max(1, ⌊n·P_in⌋) samples nearest the core, each later
round the m samples whose **density distance** (mean of the k = {k_neighbors} smallest distances to U) is
smallest. The inclusion order ranks the cluster from its dense centre to its periphery.

The last ⌊n·P_rm⌋ samples in that order are **removed** as noise (crosses, P_rm = {removal_ratio}): an
outlier near a boundary would otherwise look like the most informative sample there. Press ▶ to watch
the rounds. Cluster {cluster}: {t.members.size} samples, {int(t.inclusion_round.max(initial=1))} rounds,
{t.removed.size} removed.""")
    elif step == 3:
        st.markdown(f"""d_intra(x) is the mean distance from x to the denoised cluster; D(x, c_l) the distance to
the opponent core; t_l counts earlier picks against opponent l (all 0 here, before any pick). BS lies in
[-1, 1]: **low (red) = near a boundary** with another pseudo-class, high (blue) = deep inside. The field is
drawn over cluster {cluster}'s own region; hover a member for its numbers.""")
    elif step == 4:
        t = traces[cluster]
        st.markdown(f"""**Iterative selection and removal (Alg. 1).** Starting from the core, cluster {cluster}
picks its budget B_i = {t.budget} one sample at a time: the candidate with the **lowest BS**. Before each pick,
the r = ⌊|U_i| / B_i⌋ = {t.radius} candidates nearest the previous pick are dropped (the dashed circle), so picks
spread along the boundary instead of piling up at one spot. After each pick its opponent's count t_l grows, so
delta = {penalty} makes the next picks favour *other* boundaries (the table).""")
    else:
        st.markdown("""**The result.** BiLAF's budget goes to the cores (stars) plus samples on the boundaries between
pseudo-classes (circles), with the noisy periphery left out (crosses). ActiveFT, K-Means and random spend the
same budget on samples that represent the distribution (or not), with no notion of boundaries; their picks
are stars, as a whole-budget method's are on the Select and Compare maps.""")

with figure_col:
    if step == 1:
        st.plotly_chart(figures.regions_figure(result), width="stretch", key="learn_fig1")
    elif step == 2:
        st.plotly_chart(figures.idc_figure(result, cluster), width="stretch", key="learn_fig2")
    elif step == 3:
        st.plotly_chart(figures.score_figure(result, cluster, penalty=penalty), width="stretch", key="learn_fig3")
    elif step == 4:
        n_picks = len(traces[cluster].picks)
        if n_picks == 0:
            st.info("This cluster's budget is 1: its core is its only pick.")
            upto = 0
        else:
            upto = keep(st.slider, f"learn_upto_{cluster}", "Picks shown", n_picks, min_value=1, max_value=n_picks)
        st.plotly_chart(figures.picks_figure(result, cluster, upto), width="stretch", key="learn_fig4")
    else:
        picks = {"BiLAF": result, **{name.replace("kmeans", "K-Means").replace("activeft", "ActiveFT")
                                                   .replace("random", "Random"): idx
                                                   for name, idx in baselines(points, budget, seed).items()}}
        st.plotly_chart(figures.comparison_figure(points, picks), width="stretch", key="learn_fig5")

if step == 4:
    st.dataframe(pd.DataFrame(figures.picks_table(result, cluster)), hide_index=True, width="stretch",
                 placeholder=state.NO_VALUE)
if step == 5:
    if keep(st.toggle, "learn_variants", "Compare the paper and reference variants on these points", False):
        other = dict(stage2)
        paper = run(points, budget, n_cores, core_method, seed, tuple({**other, "variant": "paper"}.items()))
        reference = run(points, budget, n_cores, core_method, seed, tuple({**other, "variant": "reference"}.items()))
        st.plotly_chart(figures.variants_figure(points, paper, reference), width="stretch", key="learn_variants_fig")
        differ = np.setxor1d(paper.result.indices, reference.result.indices).size
        st.caption(f"{differ} samples are selected by one variant only. The reference code's IDC averages distances "
                   "to the wrong members (its density-distance indexing defect), drops each cluster's last < m "
                   "samples (grey crosses: never selectable), leaves clusters under 10 samples undenoised and fixes "
                   "each sample's opponent as its nearest other core; the paper variant fixes these "
                   "(ALGORITHM.md).")
