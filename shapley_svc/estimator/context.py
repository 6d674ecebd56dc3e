"""One output column of a context: standardised rows, the fitted zoo, and the combiner's features.

Training and inference go through this same module, so the combiner is trained on exactly the
features it sees when serving.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shapley_svc.errors import CancelledError
from shapley_svc.estimator.groups import Players
from shapley_svc.estimator.surrogates import (
    DEFAULT_FIT_MEMORY_BYTES,
    ZOO,
    FittedSurrogate,
    Pairs,
    Role,
    fit_multinomial,
    fit_surrogate,
    is_class_probabilities,
    members_with_role,
)

# Context-level features, in the order the combiner's weights expect.
GLOBAL_FEATURES = (
    "is_probability",
    "class_probabilities",
    "saturation",
    "log10_rows",
    "log10_features",
    "log10_features_beyond_32",
    "max_abs_correlation",
    "discrete_share",
    "best_oof_r2",
    "ridge_oof_r2",
    "tree_gain",
)
# The gate is linear in these features; the hinge lets it treat wide inputs (embeddings, where
# trees split on one of many near-copies of a column) apart from tables, instead of bending one
# slope over both regimes.
WIDE_FEATURES_START = 32
# Per-surrogate features. The log-ratio of unexplained variance to the best member's separates
# near-perfect fits (1 - R^2 of 1e-4 against 1e-2) that R^2 itself barely tells apart.
SURROGATE_FEATURES = ("oof_r2", "oof_r2_gap", "agreement", "log_unexplained_ratio")
UNEXPLAINED_FLOOR = 1e-6
PROBE_ROWS = 32
SATURATION_MARGIN = 0.02
# Context statistics look at a seeded sample at most this large: a d x d correlation over all
# rows costs n * d^2 (minutes at n = 20,000, d = 4,096) and the statistics are already stable.
STATISTICS_MAX_ROWS = 5_000
STATISTICS_MAX_COLUMNS = 256


@dataclass
class Standardiser:
    """Column means and scales of the context (constant columns keep scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> "Standardiser":
        scale = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(scale > 1e-12, scale, 1.0))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass(frozen=True)
class ContextFeatures:
    """What the combiner sees of one output column of a context.

    Attributes
    ----------
    global_features : (len(GLOBAL_FEATURES),)
    surrogate_features : (len(ZOO), len(SURROGATE_FEATURES)); rows of absent members are zero.
    available : (len(ZOO),) bool: the members that apply to this output.
    output_scale : standard deviation of the output over the context (1 if constant).
    """

    global_features: np.ndarray
    surrogate_features: np.ndarray
    available: np.ndarray
    output_scale: float


@dataclass
class OutputContext:
    """The zoo fitted to one output column (each member prepared for the background), and what
    the combiner needs to weigh it.

    Attributes
    ----------
    surrogates : one fitted surrogate per zoo member, None where the member does not apply.
    features : the combiner's view of this output.
    base_value : mean output over the background rows.
    n_players : P, what each member attributes to: d, or the number of groups.
    """

    surrogates: list[FittedSurrogate | None]
    features: ContextFeatures
    base_value: float
    n_players: int

    def member_values(
        self, Z: np.ndarray, shared: dict | None = None, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """(len(ZOO), m, P) attributions of each member for the (m, d) standardised rows ``Z``
        (zeros where absent, and where ``needed``, (len(ZOO),) bool, is False).

        Pass the same ``shared`` dict for every output of one context and the same rows: members
        fitted to all outputs at once (multinomial) then compute their values once.
        """
        return _member_values(self.surrogates, self.n_players, Z, shared, needed)


def _member_values(
    surrogates: list[FittedSurrogate | None],
    n_players: int,
    Z: np.ndarray,
    shared: dict | None,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    shared = {} if shared is None else shared
    values = np.zeros((len(ZOO), Z.shape[0], n_players))
    for s, fitted in enumerate(surrogates):
        if fitted is not None and (needed is None or needed[s]):
            values[s] = fitted.model.attributions_shared(Z, shared)
    return values


@dataclass
class FittedContext:
    """Everything a fit learns of a context that explaining needs: the standardisation and, per
    output, the fitted and prepared zoo. Training and serving both go through it.

    Attributes
    ----------
    standardiser : the context rows' column means and scales.
    outputs : one ``OutputContext`` per output; None for a constant output.
    players : the groups explained, or None for one player per column.
    """

    standardiser: Standardiser
    outputs: list[OutputContext | None]
    players: Players | None

    def member_values(
        self, rows: np.ndarray, needed: list[np.ndarray] | None = None
    ) -> list[np.ndarray | None]:
        """Per output, the (len(ZOO), m, P) attributions of each member for the (m, d) rows as
        given (standardised here); None for a constant output. ``needed``: per output, the
        (len(ZOO),) members to compute (the others are left zero); None for all."""
        Z = self.standardiser.transform(rows)
        shared: dict = {}
        return [
            None if context is None else context.member_values(Z, shared, _of(needed, k))
            for k, context in enumerate(self.outputs)
        ]

    def design_players(self, width: int) -> np.ndarray:
        """(width,) int64: the player of each design column."""
        if self.players is None:
            return np.arange(width, dtype=np.int64)
        return np.ascontiguousarray(self.players.of_feature, dtype=np.int64)

    def member_pair_gaps(
        self,
        rows: np.ndarray,
        pairs: Pairs,
        needed: list[np.ndarray] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[np.ndarray]:
        """Per output, the (len(ZOO), m, n_pairs) pair gaps of each member (zeros where absent,
        or not ``needed`` as in ``member_values``) for the (m, d) rows as given (standardised
        here); ``pairs.background`` is already standardised. ``should_stop`` is polled before
        each member's gaps (True: ``CancelledError``)."""
        Z = self.standardiser.transform(rows)
        shared: dict = {}
        found = []
        for k, context in enumerate(self.outputs):
            gaps = np.zeros((len(ZOO), *pairs.picks.shape))
            wanted = _of(needed, k)
            for s, fitted in enumerate(context.surrogates):
                if fitted is not None and (wanted is None or wanted[s]):
                    if should_stop is not None and should_stop():
                        raise CancelledError("the work was cancelled")
                    gaps[s] = fitted.model.pair_gaps(Z, pairs, shared)
            found.append(gaps)
        return found

    def pair_cache_bytes(self) -> int:
        """Bytes the members' pair gaps have made of the background and keep (see
        ``Surrogate.pair_cache_bytes``)."""
        return sum(
            fitted.model.pair_cache_bytes()
            for context in self.outputs
            for fitted in context.surrogates
            if fitted is not None
        )

    def release_pair_cache(self) -> None:
        """Forget what ``pair_cache_bytes`` counts: the members make it again when needed."""
        for context in self.outputs:
            for fitted in context.surrogates:
                if fitted is not None:
                    fitted.model.release_pair_cache()


def _of(needed: list[np.ndarray] | None, k: int) -> np.ndarray | None:
    return None if needed is None else needed[k]


def _statistics_sample(Z: np.ndarray, seed: int) -> np.ndarray:
    """The rows the context statistics look at: all, or a seeded sample of them."""
    if Z.shape[0] <= STATISTICS_MAX_ROWS:
        return Z
    rng = np.random.default_rng(seed)
    return Z[np.sort(rng.choice(Z.shape[0], size=STATISTICS_MAX_ROWS, replace=False))]


def _max_abs_correlation(Z: np.ndarray, seed: int) -> float:
    """Mean over columns of each column's largest |r| with another (a seeded sample of
    ``STATISTICS_MAX_COLUMNS`` columns against all, when wider)."""
    if Z.shape[1] < 2:
        return 0.0
    varying = np.flatnonzero(Z.std(axis=0) > 1e-12)
    if varying.size < 2:
        return 0.0
    centred = Z[:, varying] - Z[:, varying].mean(axis=0)
    centred /= np.sqrt((centred**2).sum(axis=0))
    probed = np.arange(varying.size)
    if varying.size > STATISTICS_MAX_COLUMNS:
        rng = np.random.default_rng(seed)
        probed = np.sort(rng.choice(varying.size, size=STATISTICS_MAX_COLUMNS, replace=False))
    correlation = np.abs(centred[:, probed].T @ centred)
    correlation[np.arange(probed.size), probed] = 0.0
    return float(np.mean(np.max(correlation, axis=1)))


def member_agreement(values: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Pearson r of each member's attributions with the mean of the others' (probe rows)."""
    agreement = np.zeros(len(available))
    members = np.flatnonzero(available)
    for s in members:
        others = [t for t in members if t != s]
        if not others:
            continue
        a = values[s].ravel() - values[s].mean()
        b = values[others].mean(axis=0).ravel()
        b = b - b.mean()
        denominator = np.sqrt((a @ a) * (b @ b))
        agreement[s] = a @ b / denominator if denominator > 0 else 0.0
    return agreement


def member_features(oof: np.ndarray, available: np.ndarray, agreement: np.ndarray) -> np.ndarray:
    """(S, 4) the gate's features of each member that applies (zeros for the others): its
    out-of-fold R^2 (``oof``, clipped to [-1, 1]), its distance below the best one, its
    ``agreement`` with the others, and its unexplained share's log10 over the best's."""
    best = oof[available].max()
    unexplained = np.log10(np.maximum(1.0 - oof, UNEXPLAINED_FLOOR))
    best_unexplained = np.log10(max(1.0 - best, UNEXPLAINED_FLOOR))
    return np.where(
        available[:, None],
        np.column_stack([oof, oof - best, agreement, unexplained - best_unexplained]),
        0.0,
    )


def fit_context(
    X: np.ndarray,
    outputs: np.ndarray,
    background: np.ndarray,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
    players: Players | None = None,
    memory_bytes: int = DEFAULT_FIT_MEMORY_BYTES,
) -> FittedContext:
    """Standardise the context, fit the zoo to every output column (each member prepared for
    the background and players) and compute the combiner's features.

    When the outputs are class probabilities (K >= 3 summing to one), the logistic members are
    one multinomial fit shared by all classes; otherwise each column is fitted on its own.

    Parameters
    ----------
    X : (n, d) context rows as given (validated by the caller).
    outputs : (n, K) the model's outputs on X.
    background : indices of the background rows.
    seed : seeds every surrogate and the probe rows.
    should_stop : polled before each surrogate refit; when it returns True the fit raises
        ``CancelledError``.
    players : the groups explained (None: one player per column); the members' agreement is
        measured on the values of these players.
    memory_bytes : what one surrogate's design may hold; larger fits use a row subsample.

    Returns
    -------
    FittedContext
        One ``OutputContext`` per output; None for a constant output, which has nothing to
        attribute.
    """
    standardiser = Standardiser.fit(X)
    Z = standardiser.transform(X)
    varying = outputs.std(axis=0) > 1e-12
    background_rows = Z[background]
    shared_fits: list[dict[str, FittedSurrogate]] = [{} for _ in range(outputs.shape[1])]
    multiclass = is_class_probabilities(outputs)
    if multiclass:
        for kind in ZOO:
            if kind.make_multinomial is not None:
                fits = fit_multinomial(
                    kind, Z, outputs, seed, background_rows, players, should_stop, memory_bytes
                )
                for k, fitted in enumerate(fits):
                    shared_fits[k][kind.name] = fitted
    # Every output probes the same rows, so members fitted to all outputs at once (multinomial)
    # attribute them once: with 4 classes this took a softmax member's probe from 4 runs to 1.
    probe_shared: dict = {}
    contexts = [
        fit_output_context(
            X,
            Z,
            outputs[:, k],
            background,
            seed,
            shared_fits[k],
            multiclass,
            should_stop,
            players,
            memory_bytes,
            probe_shared,
        )
        if varying[k]
        else None
        for k in range(outputs.shape[1])
    ]
    return FittedContext(standardiser, contexts, players)


def fit_output_context(
    X: np.ndarray,
    Z: np.ndarray,
    output: np.ndarray,
    background: np.ndarray,
    seed: int,
    fitted: dict[str, FittedSurrogate] | None = None,
    class_probabilities: bool = False,
    should_stop: Callable[[], bool] | None = None,
    players: Players | None = None,
    memory_bytes: int = DEFAULT_FIT_MEMORY_BYTES,
    probe_shared: dict | None = None,
) -> OutputContext:
    """Fit the zoo to one output column and compute the combiner's features.

    ``fitted`` holds members already fitted for this column (by name); the rest are fitted here.
    ``class_probabilities`` says the column is one class of a softmax's outputs.
    ``probe_shared``: the same dict for every output of one context (see
    ``OutputContext.member_values``). Other parameters as in ``fit_context``; ``output`` is (n,)
    and ``Z`` the standardised rows.
    """
    fitted = fitted or {}
    background_rows = Z[background]
    is_probability = bool(output.min() >= 0.0 and output.max() <= 1.0)
    available = np.array([is_probability or not kind.probability_only for kind in ZOO])
    surrogates: list[FittedSurrogate | None] = [
        (
            fitted.get(kind.name)
            or fit_surrogate(
                kind, Z, output, seed, background_rows, players, should_stop, memory_bytes
            )
        )
        if ok
        else None
        for kind, ok in zip(ZOO, available, strict=True)
    ]
    oof = np.array([s.oof_r2 if s is not None else 0.0 for s in surrogates])
    oof = np.clip(oof, -1.0, 1.0)
    best = oof[available].max()

    rng = np.random.default_rng(seed)
    probe = rng.choice(background, size=min(PROBE_ROWS, background.size), replace=False)
    n_players = Z.shape[1] if players is None else players.count
    probe_values = _member_values(surrogates, n_players, Z[probe], probe_shared)
    agreement = member_agreement(probe_values, available)

    smooth = [s for s in members_with_role(Role.SMOOTH) if available[s]]
    trees = members_with_role(Role.TREE)
    # The tuned ridge (listed first among the linear members) measures how linear the output is.
    ridge = members_with_role(Role.LINEAR)[0]
    sample = _statistics_sample(X, seed)
    discrete = np.mean([np.unique(sample[:, j]).size <= 10 for j in range(X.shape[1])])
    saturation = (
        float(np.mean((output < SATURATION_MARGIN) | (output > 1 - SATURATION_MARGIN)))
        if is_probability
        else 0.0
    )
    global_features = np.array(
        [
            float(is_probability),
            float(class_probabilities),
            saturation,
            np.log10(X.shape[0]),
            np.log10(X.shape[1]),
            max(0.0, np.log10(X.shape[1] / WIDE_FEATURES_START)),
            _max_abs_correlation(_statistics_sample(Z, seed), seed),
            float(discrete),
            best,
            oof[ridge],
            oof[trees].max() - oof[smooth].max(),
        ]
    )
    spread = output.std()
    features = ContextFeatures(
        global_features,
        member_features(oof, available, agreement),
        available,
        float(spread) if spread > 1e-12 else 1.0,
    )
    return OutputContext(surrogates, features, float(output[background].mean()), n_players)
