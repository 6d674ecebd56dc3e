"""The synthetic prior: random data-generating processes, target models and exact labels.

A task is drawn in four steps, every random choice from one seeded generator:

1. A random structural causal model: nodes in topological order, each a random nonlinear
   activation of a weighted sum of earlier nodes plus noise; root nodes from varied marginals.
   Or, for a share of tasks, an embedding: a few latent factors (some clustered) mapped through
   a random hidden layer and a random projection to 48-384 correlated, low-rank dimensions,
   sometimes normalised to unit length like sentence embeddings.
2. Observed features: a random subset of the nodes (intermediate nodes too, so features
   correlate and can be redundant), some made binary or ordinal; an embedding's dimensions.
3. A target (regression, binary or 3-class) from another node, and a target model from the zoo
   (linear, forests, boosting, MLP, RBF SVM, k-NN) trained on 70 % of the rows.
4. Labels: the model's interventional SHAP values for explained rows against a background, from
   the reference engine: closed forms for linear models, TreeSHAP for forests, enumeration up to
   ``PriorConfig.max_enumerated_features`` (8) features, and unbiased sampling with a recorded
   standard error above.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from shapley_svc.reference import exact_shapley, linear_shapley, sampled_shapley, tree_shapley
from shapley_svc.reference.closed_form import logistic_additive_shapley

MODEL_FAMILIES = (
    "linear",
    "random_forest",
    "extra_trees",
    "gradient_boosting",
    "hist_boosting",
    "mlp",
    "svm",
    "knn",
)
TASKS = ("regression", "binary", "multiclass")
ACTIVATIONS = ("identity", "tanh", "sin", "square", "step", "rank", "abs", "product", "relu")
# Families whose labels stay affordable at hundreds of features: exact for linear models and
# forests, sampling for the rest. An SVM or k-NN evaluates every sampled row against the whole
# training set, minutes per task at d = 384, so embedding tasks leave them out.
EMBEDDING_FAMILIES = tuple(family for family in MODEL_FAMILIES if family not in ("svm", "knn"))


@dataclass(frozen=True)
class PriorConfig:
    """Ranges of the prior; every task draws within them."""

    min_features: int = 2
    max_features: int = 32
    min_rows: int = 100
    max_rows: int = 2000
    n_background: int = 100
    n_explained: int = 24
    # Enumeration costs m * 2**d * n_background model rows: beyond 8 features the sampler's
    # recorded error is the cheaper label (about 20x fewer rows at d = 12).
    max_enumerated_features: int = 8
    sampling_budget: int = 10_000
    task_weights: tuple[float, float, float] = (0.35, 0.5, 0.15)
    families: tuple[str, ...] = MODEL_FAMILIES
    # Embedding tasks: their share, width and rows; their sampled labels get at least this many
    # model evaluations per feature and row.
    embedding_share: float = 0.15
    embedding_min_features: int = 48
    embedding_max_features: int = 384
    embedding_max_rows: int = 1000
    embedding_evaluations_per_feature: int = 40
    # Real-table tasks: their share, and the development tables they draw from (ids of
    # ``dev_tables.json``; see ``shapley_svc.training.real_tasks``).
    real_share: float = 0.0
    real_tables: tuple[str, ...] = ()


@dataclass
class Task:
    """One drawn task: what an estimator sees, and the labels it is judged against.

    Attributes
    ----------
    X : (n, d) context rows (NaN: missing); predictions : (n,) or (n, K) the target model's
        outputs.
    background, explained : indices into X.
    truth, truth_error : (m, d) or (m, d, K) labels and their standard errors.
    categorical : indices of the columns of X that hold category codes.
    """

    X: np.ndarray
    predictions: np.ndarray
    background: np.ndarray
    explained: np.ndarray
    truth: np.ndarray
    truth_error: np.ndarray
    family: str
    task: str
    label_method: str
    info: dict = field(default_factory=dict)
    categorical: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _activation(name: str, z: np.ndarray, rng: np.random.Generator, other: np.ndarray):
    if name == "identity":
        return z
    if name == "tanh":
        return np.tanh(z)
    if name == "sin":
        return np.sin(z * rng.uniform(0.5, 2.0))
    if name == "square":
        return z**2
    if name == "step":
        return (z > rng.normal(scale=0.5)).astype(float)
    if name == "rank":
        return np.argsort(np.argsort(z)) / max(len(z) - 1, 1)
    if name == "abs":
        return np.abs(z)
    if name == "product":
        return z * other
    return np.maximum(z, 0.0)


def _standardise(column: np.ndarray) -> np.ndarray:
    spread = column.std()
    return (column - column.mean()) / spread if spread > 1e-12 else column - column.mean()


def sample_scm_data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, d) and a hidden node pool (n, n_nodes) from a random causal model."""
    n_nodes = d + rng.integers(2, max(3, d // 2) + 3)
    n_roots = max(1, int(rng.integers(1, max(2, n_nodes // 2))))
    nodes = np.empty((n, n_nodes))
    for j in range(n_roots):
        kind = rng.integers(4)
        if kind == 0:
            nodes[:, j] = rng.normal(size=n)
        elif kind == 1:
            nodes[:, j] = rng.uniform(-1.7, 1.7, size=n)
        elif kind == 2:
            nodes[:, j] = _standardise(rng.beta(rng.uniform(0.5, 3), rng.uniform(0.5, 3), size=n))
        else:
            nodes[:, j] = _standardise(rng.exponential(size=n))
    for j in range(n_roots, n_nodes):
        n_parents = int(rng.integers(1, min(j, 4) + 1))
        parents = rng.choice(j, size=n_parents, replace=False)
        z = nodes[:, parents] @ rng.normal(size=n_parents) / np.sqrt(n_parents)
        activation = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
        value = _activation(activation, z, rng, nodes[:, rng.integers(j)])
        noise = rng.uniform(0.0, 0.5)
        nodes[:, j] = _standardise(_standardise(value) + noise * rng.normal(size=n))
    observed = rng.choice(n_nodes, size=d, replace=False)
    X = nodes[:, observed].copy()
    for j in range(d):
        kind = rng.random()
        if kind < 0.1:
            X[:, j] = (X[:, j] > np.quantile(X[:, j], rng.uniform(0.2, 0.8))).astype(float)
        elif kind < 0.2:
            edges = np.quantile(X[:, j], np.sort(rng.uniform(0.05, 0.95, rng.integers(2, 6))))
            X[:, j] = np.digitize(X[:, j], edges).astype(float)
    X = X * rng.lognormal(0.0, 1.0, size=d) + rng.normal(scale=2.0, size=d)
    return X, nodes


def sample_embedding_data(
    rng: np.random.Generator, n: int, d: int
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like rows (n, d) and the latent node pool (n, n_nodes) they come from.

    A few latent factors (Gaussian, or around a few cluster centres) go through a random hidden
    layer with a nonlinearity and a random projection to d dimensions, plus a little noise:
    the dimensions are strongly correlated and the data is close to low rank, as in learned
    embeddings.
    """
    n_factors = int(rng.integers(2, 17))
    latent = rng.normal(size=(n, n_factors))
    if rng.random() < 0.5:
        centres = rng.normal(scale=2.0, size=(int(rng.integers(2, 9)), n_factors))
        latent = latent * rng.uniform(0.3, 1.0) + centres[rng.integers(len(centres), size=n)]
    width = int(rng.integers(n_factors, 4 * n_factors + 1))
    hidden = latent @ rng.normal(size=(n_factors, width)) / np.sqrt(n_factors)
    hidden = _activation(("tanh", "relu", "identity", "sin")[rng.integers(4)], hidden, rng, hidden)
    X = hidden @ rng.normal(size=(width, d)) / np.sqrt(width)
    X = X + rng.uniform(0.02, 0.3) * X.std() * rng.normal(size=(n, d))
    if rng.random() < 0.5:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    nodes = np.column_stack([latent, hidden])
    spread = nodes.std(axis=0)
    nodes = (nodes - nodes.mean(axis=0)) / np.where(spread > 1e-12, spread, 1)
    return X, nodes


def draw_target(rng, nodes, task):
    n_nodes = nodes.shape[1]
    picks = rng.choice(n_nodes, size=min(n_nodes, int(rng.integers(2, 6))), replace=False)
    signal = nodes[:, picks] @ rng.normal(size=picks.size)
    if rng.random() < 0.5:
        signal = signal + np.prod(nodes[:, picks[:2]], axis=1) * rng.normal()
    signal = _standardise(signal) + rng.uniform(0.0, 0.6) * rng.normal(size=len(signal))
    if task == "regression":
        return signal * rng.lognormal(0, 1) + rng.normal()
    if task == "binary":
        return (signal > np.quantile(signal, rng.uniform(0.2, 0.8))).astype(int)
    return np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))


def make_target_model(family: str, task: str, rng: np.random.Generator):
    seed = int(rng.integers(2**31))
    classify = task != "regression"
    if family == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(n_estimators=50, max_depth=int(rng.integers(3, 12)), random_state=seed)
    if family == "extra_trees":
        cls = ExtraTreesClassifier if classify else ExtraTreesRegressor
        return cls(n_estimators=50, min_samples_leaf=int(rng.integers(1, 10)), random_state=seed)
    if family == "gradient_boosting":
        cls = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return cls(
            n_estimators=int(rng.integers(30, 150)),
            max_depth=int(rng.integers(2, 5)),
            random_state=seed,
        )
    if family == "hist_boosting":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(max_iter=int(rng.integers(30, 150)), random_state=seed)
    if family == "linear":
        c = float(np.exp(rng.uniform(np.log(0.05), np.log(20))))
        model = LogisticRegression(C=c, max_iter=2000) if classify else Ridge(alpha=1 / c)
    elif family == "mlp":
        width = int(rng.choice([8, 16, 32, 64]))
        layers = (width,) if rng.random() < 0.5 else (width, width)
        cls = MLPClassifier if classify else MLPRegressor
        model = cls(
            hidden_layer_sizes=layers,
            alpha=float(np.exp(rng.uniform(-9, 0))),
            max_iter=500,
            random_state=seed,
        )
    elif family == "svm":
        c = float(np.exp(rng.uniform(np.log(0.3), np.log(30))))
        model = CalibratedClassifierCV(SVC(C=c), ensemble=False) if classify else SVR(C=c)
    elif family == "knn":
        k = int(rng.integers(3, 30))
        model = KNeighborsClassifier(k) if classify else KNeighborsRegressor(k)
    else:
        raise ValueError(f"unknown family {family!r}")
    return make_pipeline(StandardScaler(), model)


def _output(model, task):
    if task == "binary":
        return lambda Z: model.predict_proba(Z)[:, 1]
    if task == "multiclass":
        return model.predict_proba
    return model.predict


def _labels(model, family, task, rows, background, config, seed):
    """(values, standard errors, method) from the cheapest exact route the model allows."""
    d = rows.shape[1]
    # Every preprocessing step (imputation, scaling) maps each column on its own, so the game
    # of the final estimator on preprocessed rows is the model's game on the raw columns.
    final = model
    if isinstance(model, Pipeline):
        final = model[-1]
        rows, background = model[:-1].transform(rows), model[:-1].transform(background)
    if family in ("random_forest", "extra_trees"):
        result = tree_shapley(final, rows, background)
        values = result.values[:, :, 1] if task == "binary" else result.values
        return values, np.zeros_like(values), "tree_shapley"
    if family == "linear" and task != "multiclass":
        coef = np.ravel(final.coef_)
        if task == "regression":
            result = linear_shapley(coef, float(final.intercept_), rows, background)
        else:
            result = logistic_additive_shapley(
                rows * coef,
                background * coef,
                float(final.intercept_[0]),
                n_permutations=256,
                random_state=seed,
            )
        return result.values, result.uncertainty, result.method
    predict = _output(final, task)
    if d <= config.max_enumerated_features:
        result = exact_shapley(predict, rows, background)
    else:
        budget = max(config.sampling_budget, config.embedding_evaluations_per_feature * d)
        result = sampled_shapley(predict, rows, background, budget, seed)
    return result.values, result.uncertainty, result.method


def sample_task(seed: int, config: PriorConfig = PriorConfig()) -> Task:
    """Draw one task of the prior; the same seed gives the same task."""
    # From their own streams, so that adding real-table or embedding tasks leaves every other
    # task as it was.
    if config.real_share > 0 and np.random.default_rng([seed, 2]).random() < config.real_share:
        from shapley_svc.training.real_tasks import sample_real_task

        return sample_real_task(seed, config)
    rng = np.random.default_rng(seed)
    d = int(np.exp(rng.uniform(np.log(config.min_features), np.log(config.max_features + 1))))
    d = min(max(d, config.min_features), config.max_features)
    n = int(np.exp(rng.uniform(np.log(config.min_rows), np.log(config.max_rows + 1))))
    task = TASKS[rng.choice(3, p=np.array(config.task_weights) / sum(config.task_weights))]
    family = config.families[rng.integers(len(config.families))]
    embedding = np.random.default_rng([seed, 1]).random() < config.embedding_share
    if embedding:
        low, high = config.embedding_min_features, config.embedding_max_features
        d = int(np.exp(rng.uniform(np.log(low), np.log(high + 1))))
        n = min(n, config.embedding_max_rows)
        families = [f for f in config.families if f in EMBEDDING_FAMILIES] or list(config.families)
        family = families[rng.integers(len(families))]
        X, nodes = sample_embedding_data(rng, n, d)
    else:
        X, nodes = sample_scm_data(rng, n, d)
    y = draw_target(rng, nodes, task)
    return labelled_task(
        rng, X, y, nodes, task, family, config, seed, {"embedding": bool(embedding)}
    )


def labelled_task(
    rng: np.random.Generator,
    X: np.ndarray,
    y: np.ndarray,
    nodes: np.ndarray,
    task: str,
    family: str,
    config: PriorConfig,
    seed: int,
    info: dict,
    categorical: np.ndarray | None = None,
) -> Task:
    """Train the family's model on 70 % of (X, y), draw background and explained rows, label.

    A classification target whose training rows miss a class is redrawn as a regression target
    from ``nodes``. When X has missing cells, the model imputes column medians first.
    """
    n, d = X.shape
    order = rng.permutation(n)
    train = order[: int(0.7 * n)]
    if task != "regression" and np.unique(y[train]).size < (3 if task == "multiclass" else 2):
        task, y = "regression", draw_target(rng, nodes, "regression")
    model = make_target_model(family, task, rng)
    if np.isnan(X).any():
        steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        model = Pipeline([("impute", imputer), *steps])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[train], y[train])
    predictions = np.asarray(_output(model, task)(X), dtype=np.float64)
    n_background = min(config.n_background, n // 2)
    background = np.sort(rng.choice(n, size=n_background, replace=False))
    others = np.setdiff1d(np.arange(n), background)
    explained = np.sort(
        rng.choice(others, size=min(config.n_explained, others.size), replace=False)
    )
    truth, truth_error, method = _labels(
        model, family, task, X[explained], X[background], config, seed
    )
    return Task(
        X,
        predictions,
        background,
        explained,
        truth,
        truth_error,
        family,
        task,
        method,
        {"seed": seed, "n": n, "d": d, **info},
        np.zeros(0, dtype=np.int64) if categorical is None else categorical,
    )
