"""Selection quality: linear-probe and k-NN top-1 of every method, shaped like the
BiLAF paper's Table 1, plus the paper-protocol ablation (Table 2) on one budget.

    python benchmarks/selection_quality.py                      # shared CIFAR-10 features
    python benchmarks/selection_quality.py --features F.npz --budgets 1 2 --seeds 0

The feature file needs ``features`` (or ``train_features``), ``labels`` and a
``test_features`` / ``test_labels`` split (without one, the unselected pool is the
evaluation split). Every finished run is appended to ``<work>/runs.jsonl`` and stage-1
cores are kept in ``<work>/``, so an interrupted benchmark resumes where it stopped and
the table can be printed from what has finished (``--report-only``). Budgets run in the
order given (the paper's 1 % and 2 % first by default), ActiveFT being the slow part:
its 300 steps cost one N x K product each, K = B.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the label-free diagnostics whose rank correlation with the probes' accuracy is measured
from bilaf_core.metrics import LABEL_FREE as DIAGNOSTICS  # noqa: E402

DEFAULT_FEATURES = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_effl0_features.npz"
METHODS = ("bilaf (auto, default)", "random", "fds", "kmeans", "activeft", "bilaf (paper)", "bilaf (reference)",
           "typiclust", "probcover")
ABLATIONS = {  # paper Table 2, BiLAF paper variant with one switch changed
    "denoise none": {"denoise": "none"},
    "denoise density": {"denoise": "density"},
    "denoise distance": {"denoise": "distance"},
    "denoise idc (default)": {},
    "criterion distance": {"criterion": "distance"},
    "process one-shot": {"process": "one_shot"},
    "delta 1.0 (no penalty)": {"opponent_penalty": 1.0},
}


class Bench:
    def __init__(self, features_path: Path, work: Path, n_cores: int):
        from bilaf_core.core import l2_normalize
        from bilaf_core.features import load_feature_file

        feature_set = load_feature_file(features_path)
        self.features = np.asarray(feature_set.features, dtype=np.float32)
        self.unit = l2_normalize(self.features)
        self.labels = feature_set.labels
        self.test_features, self.test_labels = feature_set.test_features, feature_set.test_labels
        self.n_cores = n_cores
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "runs.jsonl"
        self.done = {row["key"]: row for row in read_rows(self.log)}

    def cores(self, k: int, seed: int) -> tuple[np.ndarray, float]:
        """ActiveFT cores (K, seed) with select_cores' defaults, computed once and kept on
        disk with their seconds; the file name carries the cores cache's version, so cores
        from an older stage 1 are not mixed into the table."""
        from bilaf_core._io import atomic_open
        from bilaf_core.core import _CORES_CACHE_VERSION, select_cores

        path = self.work / f"activeft_k{k}_seed{seed}_default_v{_CORES_CACHE_VERSION}.npz"
        if path.is_file():
            with np.load(path) as saved:
                return saved["cores"], float(saved["seconds"])
        start = time.perf_counter()
        cores = select_cores(self.unit, k, method="activeft", random_state=seed)
        seconds = time.perf_counter() - start
        with atomic_open(path, "wb") as handle:
            np.savez(handle, cores=cores, seconds=seconds)
        return cores, seconds

    def run(self, method: str, budget: int, seed: int, overrides: dict | None = None, tag: str = "") -> dict:
        from bilaf_core import select
        from bilaf_core.evaluate import evaluate

        key = json.dumps([method, budget, seed, tag])
        if key in self.done:
            return self.done[key]
        if method.startswith("bilaf (auto"):  # select()'s default, its ActiveFT cores shared with the other rows
            from bilaf_core.auto import auto_n_cores

            split = auto_n_cores(self.features.shape[0], budget)
            cores, stage1 = self.cores(split.n_cores, seed)
            if split.n_cores == budget:
                indices, seconds = cores, stage1
            else:
                selection = select(self.features, budget, cores=cores, random_state=seed)
                indices, seconds = selection.indices, stage1 + selection.timings["total"]
        elif method == "activeft":
            indices, seconds = self.cores(budget, seed)
        elif method.startswith("bilaf"):
            cores, stage1 = self.cores(self.n_cores, seed)
            variant = "reference" if "reference" in method else "paper"
            selection = select(self.features, budget, cores=cores, variant=variant, random_state=seed,
                               **(overrides or {}))
            indices, seconds = selection.indices, stage1 + selection.timings["total"]
        else:
            selection = select(self.features, budget, method=method, random_state=seed)
            indices, seconds = selection.indices, selection.timings["total"]
        row = {"key": key, "method": method, "budget": budget, "seed": seed, "tag": tag, "seconds": seconds,
               "classes": int(np.unique(self.labels[indices]).size), **self.diagnose(indices)}
        for protocol in ("linear", "knn"):
            result = evaluate(self.features, self.labels, indices, protocol=protocol,
                              test_features=self.test_features, test_labels=self.test_labels)
            row[protocol] = result.top1
            row["eval_split"] = result.eval_split
        with self.log.open("a") as handle:  # one line per finished run: a crash loses at most the current run
            handle.write(json.dumps(row) + "\n")
        self.done[key] = row
        return row


    def diagnose(self, indices: np.ndarray) -> dict:
        """The label-free diagnostics of one selection (on the L2-normalised pool)."""
        from bilaf_core.metrics import budget_radius, default_coverage_radius, pseudo_classes, selection_diagnostics

        if not hasattr(self, "_radius"):
            self._radius, self._pseudo, self._radius_b = default_coverage_radius(self.unit), pseudo_classes(self.unit), {}
        if indices.size not in self._radius_b:
            self._radius_b[indices.size] = budget_radius(self.unit, indices.size)
        return selection_diagnostics(self.unit, indices, radius=self._radius, radius_b=self._radius_b[indices.size],
                                     pseudo=self._pseudo)


def correlations(rows: list[dict], budgets: dict[float, int], protocol: str) -> dict[float, dict[str, dict]]:
    """{percent: {diagnostic: {"rho", "n"}}}: Spearman rho, within each budget, of every
    diagnostic with the protocol's accuracy over every selection made at that budget
    (methods x seeds x settings); budgets with fewer than 4 selections are left out."""
    from scipy.stats import spearmanr

    out: dict[float, dict[str, dict]] = {}
    for percent, b in budgets.items():
        # one row per distinct selection: methods that coincide (auto = ActiveFT at low
        # budgets, = the paper's K at 5 %) select the same samples, with the same values
        distinct = {tuple(r.get(name) for name in DIAGNOSTICS): r for r in rows if r["budget"] == b}
        for name in DIAGNOSTICS:
            picked = [r for r in distinct.values() if name in r]
            if len(picked) >= 4:
                rho = spearmanr([r[name] for r in picked], [r[protocol] for r in picked]).statistic
                out.setdefault(percent, {})[name] = {"rho": round(float(rho), 3), "n": len(picked)}
    return out


def spearman_table(rows: list[dict], budgets: dict[float, int]) -> list[str]:
    """The correlations of :func:`correlations` for both protocols, as a markdown table."""
    lines = ["### Which label-free diagnostic predicts accuracy? Spearman rho within each budget", "",
             "Over every distinct selection the benchmark made at the budget (all methods, seeds and tagged settings, "
             "such as the ablation or early-stopped ActiveFT runs); for EMD proxy and pseudo-class KL lower is "
             "better, so a useful one has a negative rho. n = selections.", "",
             "| diagnostic | protocol | " + " | ".join(f"{p:g} %" for p in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for protocol in ("linear", "knn"):
        measured = correlations(rows, budgets, protocol)
        for name in DIAGNOSTICS:
            cells = [f"{measured[p][name]['rho']:+.2f} (n={measured[p][name]['n']})" if name in measured.get(p, {})
                     else "-" for p in budgets]
            lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_guidance(path: Path, name: str, rows: list[dict], budgets: dict[float, int]) -> None:
    """Merge this data set's linear-probe correlations into the app's guidance file."""
    from bilaf_core._io import atomic_write_text
    from bilaf_core.guidance import load_measurements

    data = load_measurements(path)
    data[name] = {f"{p:g}": table for p, table in correlations(rows, budgets, "linear").items()}
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


def mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.1f} (n=1)"
    return f"{scale * statistics.mean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def report(rows: list[dict], n_pool: int, percents: list[float], header: str) -> str:
    budgets = {p: int(round(p / 100 * n_pool)) for p in percents}
    lines = [header, ""]
    for protocol, title in (("linear", "Linear probe top-1 (%)"), ("knn", "k-NN top-1 (%), k = 20, T = 0.07")):
        lines += [f"### {title}", "", "| method | " + " | ".join(f"{p:g} % (B = {b:,})" for p, b in budgets.items()) + " |",
                  "|---|" + "---|" * len(budgets)]
        for method in METHODS:
            cells = [mean_std([r[protocol] for r in rows if r["method"] == method and r["budget"] == b and not r["tag"]])
                     for b in budgets.values()]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Selection seconds (mean; ActiveFT's stage 1 included for BiLAF)", "",
              "| method | " + " | ".join(f"{p:g} %" for p in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for method in METHODS:
        cells = []
        for b in budgets.values():
            seconds = [r["seconds"] for r in rows if r["method"] == method and r["budget"] == b and not r["tag"]]
            cells.append(f"{statistics.mean(seconds):.1f}" if seconds else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [""] + spearman_table(rows, budgets)
    ablation = [r for r in rows if r["tag"] in ABLATIONS]
    if ablation:
        budget = ablation[0]["budget"]
        lines += ["", f"### Ablation, BiLAF (paper variant), B = {budget:,}: linear / k-NN top-1 (%)", "",
                  "| setting | linear | k-NN |", "|---|---|---|"]
        for tag in ABLATIONS:
            picked = [r for r in ablation if r["tag"] == tag]
            lines.append(f"| {tag} | {mean_std([r['linear'] for r in picked])} | {mean_std([r['knn'] for r in picked])} |")
    return "\n".join(lines) + "\n"


def sweep(bench: Bench, args: argparse.Namespace) -> int:
    """BiLAF (paper variant) over K, P_rm and L2 normalisation at one budget."""
    budget = int(round(args.sweep_budget / 100 * bench.features.shape[0]))
    lines = [f"## BiLAF sweep at B = {budget:,} on {args.features.name}, seeds {args.seeds}: linear / k-NN top-1 (%)",
             "", "| K | P_rm | normalise | linear | k-NN |", "|---|---|---|---|---|"]
    for k in args.sweep_k:
        bench.n_cores = k
        for removal in args.sweep_rm:
            for normalize in (True, False):
                tag = f"sweep K={k} rm={removal} norm={normalize}"
                rows = [bench.run("bilaf (paper)", budget, s, {"removal_ratio": removal, "normalize": normalize}, tag)
                        for s in args.seeds]
                lines.append(f"| {k} | {removal} | {normalize} | {mean_std([r['linear'] for r in rows])} | "
                             f"{mean_std([r['knn'] for r in rows])} |")
                print(lines[-1], file=sys.stderr, flush=True)
    reference = [bench.run(m, budget, s) for m in ("activeft", "random") for s in args.seeds]
    for method in ("activeft", "random"):
        picked = [r for r in reference if r["method"] == method]
        lines.append(f"| {method} (whole budget) | | | {mean_std([r['linear'] for r in picked])} | "
                     f"{mean_std([r['knn'] for r in picked])} |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = args.out.with_name(args.out.stem + "_sweep.md")
    out.write_text(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 0.5, 5], help="percent of the pool")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-cores", type=int, default=50, help="BiLAF's K (ALGORITHM.md: 50 for CIFAR-10)")
    parser.add_argument("--ablation-budget", type=float, default=1.0, help="percent; 0 skips the ablation")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bilaf-studio" / "selection_quality")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection_quality.md")
    parser.add_argument("--report-only", action="store_true", help="print the table from finished runs")
    parser.add_argument("--name", help="the data set's name in the guidance file (default: the feature file's stem)")
    parser.add_argument("--guidance", type=Path,
                        help="merge the diagnostics' measured correlations into this file (the app reads "
                             "bilaf_core/guidance.json)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: BiLAF (paper) at --sweep-budget over K x P_rm x normalisation (why BiLAF "
                             "leads or not)")
    parser.add_argument("--sweep-budget", type=float, default=1.0, help="percent")
    parser.add_argument("--sweep-k", type=int, nargs="+", default=[50, 100, 250])
    parser.add_argument("--sweep-rm", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    args = parser.parse_args(argv)

    work = args.work / args.features.stem
    bench = Bench(args.features, work, args.n_cores)
    n_pool = bench.features.shape[0]
    if args.sweep:
        return sweep(bench, args)
    if not args.report_only:
        plan = [(m, int(round(p / 100 * n_pool)), s, None, "") for p in args.budgets for s in args.seeds for m in args.methods]
        if args.ablation_budget:
            b = int(round(args.ablation_budget / 100 * n_pool))
            ablation = [("bilaf (paper)", b, s, o, t) for t, o in ABLATIONS.items() for s in args.seeds]
            after_two_budgets = len(args.seeds) * len(args.methods) * 2
            plan[after_two_budgets:after_two_budgets] = ablation
        for method, budget, seed, overrides, tag in tqdm(plan, desc="runs", file=sys.stderr):
            row = bench.run(method, budget, seed, overrides, tag)
            tqdm.write(f"{method:18s} {tag:22s} B={budget:5d} seed={seed} linear={row['linear']:.3f} "
                       f"knn={row['knn']:.3f} {row['seconds']:.1f}s", file=sys.stderr)
    header = (f"## Selection quality on {args.features.name}: N = {n_pool:,}, d = {bench.features.shape[1]}, "
              f"BiLAF K = {args.n_cores} (ActiveFT stage 1), seeds {args.seeds}, evaluated on "
              f"{'the test split' if bench.test_features is not None else 'the unselected pool'}\n\n"
              f"Machine: {platform.processor() or platform.machine()}, numbers are mean ± std over seeds.")
    table = report(list(bench.done.values()), n_pool, sorted(args.budgets), header)
    if args.guidance:
        budgets = {p: int(round(p / 100 * n_pool)) for p in sorted(args.budgets)}
        write_guidance(args.guidance, args.name or args.features.stem, list(bench.done.values()), budgets)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
