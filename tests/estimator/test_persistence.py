"""Saved explainers: arrays in .npz and a JSON manifest, read back bit for bit, refused when
damaged or made for another format or artifact."""

import json

import numpy as np
import pytest

from shapley_svc.errors import InvalidArgumentError, NotFittedError
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.persistence import ARRAYS, MANIFEST
from shapley_svc.estimator.surrogates import ZOO, ClassView


def _table(rng, n=400):
    X = rng.normal(size=(n, 5))
    X[:, 4] = rng.integers(0, 6, size=n)
    X[rng.random(n) < 0.2, 1] = np.nan
    y = (
        np.tanh(X[:, 0])
        + np.nan_to_num(X[:, 1]) * X[:, 2]
        + np.array([0, 1, 2, 0, 1, 3])[X[:, 4].astype(int)]
    )
    return X, y


def _softmax(scores):
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def _assert_same_answers(saved, loaded, X, predictions):
    before, after = saved.explain(X, predictions), loaded.explain(X, predictions)
    for name in ("values", "uncertainty", "base_values", "data"):
        assert np.array_equal(getattr(before, name), getattr(after, name), equal_nan=True), name
    assert before.diagnostics == after.diagnostics
    assert before.attribution_names == after.attribution_names


@pytest.mark.parametrize("case", ["missing_and_categorical", "classes_and_groups", "frame"])
def test_a_loaded_explainer_answers_bit_for_bit(rng, tmp_path, case):
    X, y = _table(rng)
    if case == "missing_and_categorical":
        explainer = ZeroShotExplainer(random_state=7).fit(X, y, categorical=[4])
        query, predictions = X[:40], y[:40]
    elif case == "classes_and_groups":
        probabilities = _softmax(np.column_stack([y, -y, np.nan_to_num(X[:, 1])]))
        explainer = ZeroShotExplainer().fit(
            X, probabilities, groups={"a": [0, 1], "b": [2, 3, 4]}, categorical=[4]
        )
        query, predictions = X[:40], probabilities[:40]
    else:
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame(X, columns=list("abcde")).assign(
            e=lambda frame: frame["e"].map(dict(enumerate("uvwxyz"))).astype("category")
        )
        explainer = ZeroShotExplainer().fit(X, y)
        query, predictions = X.iloc[:40], y[:40]
    explainer.save(tmp_path / "ctx")
    loaded = ZeroShotExplainer.load(tmp_path / "ctx")
    _assert_same_answers(explainer, loaded, query, predictions)
    assert loaded.categories_ == explainer.categories_
    assert loaded.diagnostics_ == explainer.diagnostics_
    if case == "classes_and_groups":
        # The classes' views share one multinomial fit, as when it was fitted.
        views = [
            output.surrogates[s].model
            for output in loaded.context_.outputs
            for s in range(len(output.surrogates))
            if output.surrogates[s] is not None
            and isinstance(output.surrogates[s].model, ClassView)
        ]
        multinomial_kinds = sum(kind.make_multinomial is not None for kind in ZOO)
        assert len(views) == 3 * multinomial_kinds
        assert len({id(view.parent) for view in views}) == multinomial_kinds
    with np.load(tmp_path / "ctx" / ARRAYS, allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def _saved(rng, tmp_path):
    X, y = _table(rng, n=120)
    ZeroShotExplainer().fit(X, y).save(tmp_path / "ctx")
    return tmp_path / "ctx"


def _edit_manifest(path, change):
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / ARRAYS).write_bytes((p / ARRAYS).read_bytes()[:-9] + b"x" * 9), "sha256"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "manifest does not parse"),
        (lambda p: (p / ARRAYS).unlink(), "arrays.npz is missing"),
        (lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)), "format version 99"),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(artifact_sha256="0" * 64)),
            "was fitted with artifact",
        ),
        (
            lambda p: _edit_manifest(
                p, lambda m: m["state"]["context_"].update({"class": "Popen"})
            ),
            "does not read back",
        ),
        (lambda p: _edit_manifest(p, lambda m: m.update(format="other")), "format 'other'"),
        (lambda p: (p / MANIFEST).write_text("[]"), "manifest is an array, not a JSON object"),
        (lambda p: (p / MANIFEST).write_text("null"), "manifest is null"),
        (lambda p: _edit_manifest(p, lambda m: m.update(state=[])), "does not read back"),
    ],
)
def test_a_damaged_or_foreign_directory_is_refused(rng, tmp_path, damage, message):
    path = _saved(rng, tmp_path)
    damage(path)
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        ZeroShotExplainer.load(path)
    assert caught.value.argument == "path"


def test_only_a_fitted_explainer_saves(tmp_path):
    with pytest.raises(NotFittedError):
        ZeroShotExplainer().save(tmp_path / "ctx")
    assert not (tmp_path / "ctx").exists()


def test_a_field_a_later_version_adds_is_skipped(rng, tmp_path):
    """Optional state a later version adds (here one holding an object of a class this version
    does not know) leaves a save readable; the fields of its format must still all be there
    (``test_a_manifest_whose_fields_do_not_match_its_format_is_refused``)."""
    X, y = _table(rng)
    explainer = ZeroShotExplainer(random_state=7).fit(X, y, categorical=[4])
    directory = explainer.save(tmp_path / "ctx")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["state"]["a_later_field_"] = {"class": "ALaterClass", "id": 10**9, "fields": {}}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    loaded = ZeroShotExplainer.load(directory)
    assert not hasattr(loaded, "a_later_field_")
    _assert_same_answers(explainer, loaded, X[:20], y[:20])
