"""One definition of the selection parameters (bilaf_core.params.SelectionParams):
select's signature, the estimator, the command line and the Learn page's stage-2
options all derive from it, and it validates what it holds."""

import dataclasses
import inspect
import json

import numpy as np
import pytest

from bilaf_core import BiLAF, select
from bilaf_core.cli import _build_parser, main
from bilaf_core.params import STAGE2_PARAMS, SelectionParams, param_specs


def test_select_estimator_and_cli_expose_exactly_the_defined_parameters_with_its_defaults():
    defined = {f.name: f.default for f in dataclasses.fields(SelectionParams)}
    signature = inspect.signature(select).parameters
    assert {name: signature[name].default for name in defined} == defined
    assert signature["n_cores"].kind is inspect.Parameter.KEYWORD_ONLY
    assert {k: v for k, v in BiLAF(10).get_params().items() if k != "budget"} == defined
    select_parser = _build_parser()._subparsers._group_actions[0].choices["select"]
    options = {a.dest: a.default for a in select_parser._actions if a.dest in defined}
    assert options == defined  # --normalize included: it was missing from the CLI before
    assert STAGE2_PARAMS == ("variant", "k_neighbors", "include_ratio", "removal_ratio", "opponent_penalty",
                             "denoise", "criterion", "process")
    assert all(spec.help and spec.label for spec in param_specs())


@pytest.mark.parametrize("options, fragment", [
    ({"removal_ratio": 1.0}, "removal_ratio"),
    ({"variant": "papr"}, "variant must be one of"),
    ({"n_cores": "many"}, "n_cores must be an integer or 'auto'"),
    ({"normalize": "yes"}, "normalize must be True, False or None"),
    ({"colour": "red"}, "unknown selection parameter(s) colour"),
])
def test_bad_parameters_are_named(options, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        SelectionParams.from_options(options)


def test_cli_normalize_option_reaches_the_selection(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, np.random.default_rng(1).standard_normal((200, 5)).astype(np.float32))
    out = tmp_path / "sel.json"
    base = ["select", "--features", str(path), "--budget", "20", "--out", str(out), "--store", str(tmp_path / "s.db"),
            "--core-method", "kmeans", "--seed", "0"]
    assert main(base + ["--no-normalize"]) == 0
    assert json.loads(out.read_text())["params"]["normalize"] is False
    assert main(base) == 0 and json.loads(out.read_text())["params"]["normalize"] is True  # the paper variant's


@pytest.mark.parametrize("variant, normalize, expected", [
    ("paper", None, True), ("reference", None, False), ("paper", False, False), ("reference", True, True)])
def test_normalizes_follows_the_variant_unless_given(variant, normalize, expected):
    from bilaf_core.selection import resolve_normalize

    assert SelectionParams(variant=variant, normalize=normalize).normalizes is expected
    assert resolve_normalize(normalize, variant) is expected
