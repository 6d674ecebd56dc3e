"""The meta-learned combiner: which surrogates to trust in a context, and how much.

Weights are a softmax over the zoo members that apply, of a linear function of the context's
features (shared across cells, so the combination is a convex mix of exact surrogate
attributions). Parameters come from meta-training on the prior (``shapley_svc.training``) and are
loaded from the shipped artifact. One rule stands above the gate: a linear member that reproduces
the outputs out of fold is taken alone (``member_weights``).
"""

from dataclasses import dataclass

import numpy as np

from shapley_svc.estimator.context import GLOBAL_FEATURES, SURROGATE_FEATURES, ContextFeatures
from shapley_svc.estimator.surrogates import EXACT_FIT_UNEXPLAINED, ZOO, Role, members_with_role
from shapley_svc.kernels.combine import combine_attributions


@dataclass(frozen=True)
class CombinerParameters:
    """Everything the combiner learned; array shapes in brackets (S = zoo size, G, P features).

    gate_bias [S], gate_global [S, G], gate_surrogate [P]: the softmax's linear function.
    feature_mean, feature_scale [G]: normalisation of the global features.
    spread_log_scale [1 + G]: log of the multiplier of the surrogates' spread, per context.
    floor_log_variance: log of the variance floor, in units of (output scale)^2 / d.
    fidelity_coef [G + 3], fidelity_intercept: predicted Pearson r from context features.
    """

    gate_bias: np.ndarray
    gate_global: np.ndarray
    gate_surrogate: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    spread_log_scale: np.ndarray
    floor_log_variance: float
    fidelity_coef: np.ndarray
    fidelity_intercept: float

    @classmethod
    def neutral(cls) -> "CombinerParameters":
        """Equal weights over the applicable members, unit spread: the untrained starting point."""
        n_surrogates, n_global = len(ZOO), len(GLOBAL_FEATURES)
        return cls(
            gate_bias=np.zeros(n_surrogates),
            gate_global=np.zeros((n_surrogates, n_global)),
            gate_surrogate=np.zeros(len(SURROGATE_FEATURES)),
            feature_mean=np.zeros(n_global),
            feature_scale=np.ones(n_global),
            spread_log_scale=np.zeros(1 + n_global),
            floor_log_variance=-4.0,
            fidelity_coef=np.zeros(n_global + 3),
            fidelity_intercept=0.5,
        )


def normalised_features(context: ContextFeatures, params: CombinerParameters) -> np.ndarray:
    """(G,) the context's global features, normalised as in meta-training."""
    return (context.global_features - params.feature_mean) / params.feature_scale


def gate_weights(context: ContextFeatures, params: CombinerParameters) -> np.ndarray:
    """(S,) weights of the zoo members in this context; zero for members that do not apply."""
    features = normalised_features(context, params)
    logits = (
        params.gate_bias
        + params.gate_global @ features
        + context.surrogate_features @ params.gate_surrogate
    )
    logits = np.where(context.available, logits, -np.inf)
    logits = logits - logits[context.available].max()
    weights = np.exp(logits)
    return weights / weights.sum()


# A linear member (on the outputs, or inside the logistic link) that reproduces the outputs out
# of fold to within EXACT_FIT_UNEXPLAINED of their variance is taken alone: the model is in that
# member's class, and a mix only adds the other members' errors. On 607 real-table tasks from the
# development tables the rule lifted linear targets from mean r 0.979 to 0.990 and left every
# other family's mean unchanged (1e-4: 0.987; 1e-2: 0.991, but 10 non-linear tasks switched).
_LINEAR_MEMBERS = np.concatenate([members_with_role(Role.LINEAR), members_with_role(Role.LINK)])


def exact_linear_member(context: ContextFeatures) -> int | None:
    """Zoo position of the best-fitting linear member when it fits the outputs to within
    ``EXACT_FIT_UNEXPLAINED`` out of fold; None otherwise."""
    candidates = [s for s in _LINEAR_MEMBERS if context.available[s]]
    if not candidates:
        return None
    oof = context.surrogate_features[:, SURROGATE_FEATURES.index("oof_r2")]
    best = max(candidates, key=lambda s: oof[s])
    return int(best) if 1.0 - oof[best] <= EXACT_FIT_UNEXPLAINED else None


def member_weights(context: ContextFeatures, params: CombinerParameters) -> np.ndarray:
    """(S,) the weights the explainer uses: the gate's, or one exact linear member alone."""
    exact = exact_linear_member(context)
    if exact is None:
        return gate_weights(context, params)
    weights = np.zeros(len(ZOO))
    weights[exact] = 1.0
    return weights


def fidelity_features(
    context: ContextFeatures, params: CombinerParameters, weights: np.ndarray
) -> np.ndarray:
    """(G + 3,) what predicted fidelity is regressed on: the normalised context features, the
    weighted fit quality and agreement, and the largest weight."""
    oof, agreement = context.surrogate_features[:, 0], context.surrogate_features[:, 2]
    return np.concatenate(
        [
            normalised_features(context, params),
            [weights @ oof, weights @ agreement, float(np.max(weights))],
        ]
    )


def predicted_fidelity(
    context: ContextFeatures, params: CombinerParameters, weights: np.ndarray
) -> float:
    raw = params.fidelity_intercept + params.fidelity_coef @ fidelity_features(
        context, params, weights
    )
    return float(np.clip(raw, -1.0, 1.0))


def fidelity_floor(values: np.ndarray, std: np.ndarray, fidelity: float) -> float:
    """What a context's stated variances are multiplied by (at least 1) so that they state no
    less error than its predicted fidelity implies.

    Values that correlate r with the true ones miss them by a mean square of at least
    (1 - r^2) times the values' own mean square (the least any scale of the truth allows), so a
    context predicted at r must state at least that much variance. The gate's variances come
    from the members' disagreement and cannot see an error the members share; the fidelity
    regression is fitted to measured r. The values do not change (the projection's shares are
    ratios of variances). 80 % coverage without -> with the floor: 0.765 -> 0.796 on the 588
    cases of ``bench combiner`` (calibrated contexts unchanged: they state their measured
    residual), 0.69 -> 0.76 on the 50 real-table cases of ``bench refinement`` (its embedding
    tasks unchanged: the floor lifts none of them), 0.769 -> 0.783 and 0.826 -> 0.840 on the
    public set and held-out prior tasks of ``benchmarks.bench_estimator_accuracy``.

    Parameters
    ----------
    values, std : (m, P) a sample of the context's rows' values and stated uncertainties, as
        explain gives them (the background rows', with their predictions).
    fidelity : the context's predicted fidelity (Pearson r; negatives count as 0).
    """
    stated = float(np.mean(std**2))
    r = min(max(fidelity, 0.0), 1.0)
    implied = (1.0 - r * r) * float(np.mean(values**2))
    return max(1.0, implied / stated) if stated > 0 else 1.0


def uncertainty_terms(
    context: ContextFeatures, params: CombinerParameters, n_features: int
) -> tuple[float, float]:
    """(spread scale, variance floor) of this context."""
    features = normalised_features(context, params)
    spread_scale = float(
        np.exp(params.spread_log_scale[0] + params.spread_log_scale[1:] @ features)
    )
    floor = float(np.exp(params.floor_log_variance) * context.output_scale**2 / n_features)
    return spread_scale, floor


# The residual of efficiency is shared between a row's values half by their variances, half
# equally. The variances come from the members' disagreement, which says where they differ, not
# where they all miss the same signal (a residual of 65-70 % of the row's sum on the worst
# cases). On the dev tables x 8 families (448 cases, full and 300-row contexts) mean r went
# 0.946 -> 0.952 (full) and 0.896 -> 0.912 (300 rows), and 0.934 -> 0.936 on 607 real-table
# prior tasks; 80 % coverage moved by at most 0.002. Pooling 0.25: 0.950 / 0.906; 0.75: 0.952 /
# 0.913 with coverage 0.01-0.02 lower.
PROJECTION_POOLING = 0.5


def combine(
    surrogate_values: np.ndarray,
    weights: np.ndarray,
    spread_scale: float,
    variance_floor: float,
    target_sums: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(m, d) combined values and standard deviations; projected when ``target_sums`` is given."""
    _, m, d = surrogate_values.shape
    values = np.empty((m, d))
    std = np.empty((m, d))
    sums = np.zeros(m) if target_sums is None else np.ascontiguousarray(target_sums, np.float64)
    combine_attributions(
        np.ascontiguousarray(surrogate_values),
        np.ascontiguousarray(weights),
        spread_scale,
        variance_floor,
        PROJECTION_POOLING,
        sums,
        target_sums is not None,
        values,
        std,
    )
    return values, std


def constant_output_total(outputs: np.ndarray) -> float | None:
    """What every row's K >= 2 ``outputs`` (n, K) sum to, when they sum to one constant (class
    probabilities: to 1), else None. Within ``OUTPUT_TOTAL_TOLERANCE`` of the largest output."""
    if outputs.shape[1] < 2:
        return None
    totals = outputs.sum(axis=1)
    tolerance = OUTPUT_TOTAL_TOLERANCE * max(1.0, float(np.abs(outputs).max()))
    return float(totals.mean()) if float(np.ptp(totals)) <= tolerance else None


# Outputs summing to one constant on every context row to within this share of their magnitude
# are taken to sum to it everywhere: probabilities from a softmax or a normalised vote do, and
# float32 models' are within about 1e-7 of it.
OUTPUT_TOTAL_TOLERANCE = 1e-6


def _pooled_variances(variance: np.ndarray, fixed: np.ndarray | None) -> np.ndarray:
    """(m, P, K) what a projection moves each value by in proportion to: its variance pooled
    with its row's mean (``PROJECTION_POOLING``, as ``combine``), 0 where ``fixed`` (m, P)."""
    if fixed is None:
        mean = variance.mean(axis=1, keepdims=True)
        return (1.0 - PROJECTION_POOLING) * variance + PROJECTION_POOLING * mean
    free = ~fixed[:, :, None]
    count = np.maximum(free.sum(axis=1, keepdims=True), 1)
    mean = np.where(free, variance, 0.0).sum(axis=1, keepdims=True) / count
    pooled = (1.0 - PROJECTION_POOLING) * variance + PROJECTION_POOLING * mean
    return np.where(free, pooled, 0.0)


def without_null_players(
    values: np.ndarray, std: np.ndarray, null: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(m, P, K) values and standard deviations with the ``null`` (m, P) players' values and
    uncertainty exactly zero, what they held moved onto the row's other players as ``combine``
    moves efficiency's residual (by pooled variance), so each row keeps its sum.

    A player whose columns hold the same value in the explained row as in every background row
    changes no coalition's value: its interventional Shapley value is zero for any model (a
    constant column, or one the background never varies from the row's value). The members
    give it zero, but the projection onto efficiency gave it a share of the residual (a column
    of 3.0 added to diabetes took up to 0.87 beside values up to 92 with a boosted model, up to
    1.56 with a forest, QA 2026-12-06)."""
    if not null.any():
        return values, std
    variance = std**2
    pooled = _pooled_variances(variance, null)
    moved = np.where(null[:, :, None], values, 0.0).sum(axis=1, keepdims=True)
    weight = pooled.sum(axis=1, keepdims=True)
    share = np.where(weight > 0, pooled / np.where(weight > 0, weight, 1.0), 0.0)
    values = np.where(null[:, :, None], 0.0, values + share * moved)
    return values, np.where(null[:, :, None], 0.0, std)


def balanced_across_outputs(
    values: np.ndarray,
    std: np.ndarray,
    targets: np.ndarray | None,
    fixed: np.ndarray | None = None,
    stated_factors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(m, P, K) values whose K outputs' values sum to zero for every player, and their standard
    deviations (``std`` as given): the least change, weighed by each value's pooled variance as
    in ``combine``, that keeps each output's sum at ``targets`` (m, K) (which must sum to zero
    over K) or, with ``targets`` None, leaves those sums free. The ``fixed`` (m, P) players do
    not move.
    ``stated_factors`` (K,): what each output's variances were multiplied by to state them (the
    fidelity floor); the weights are the variances without it, so that the factors change the
    uncertainty only, as they do in ``combine``.

    Where the outputs sum to a constant everywhere (``constant_output_total``), so do their games
    (v_1 + ... + v_K is constant), and the players' values sum to zero over the outputs exactly;
    the members fit each output apart and do not. The change is phi + w (alpha_j + beta_k) with
    w the pooled variances: alpha from each player's sum, beta from a K x K system (its all-ones
    direction is free and changes nothing). The standard deviations stay as stated: the errors of
    one feature's outputs are correlated (the same members, and in refine the same pairs, measure
    them all), and shrinking each variance by its share, as for independent errors, cut the 80 %
    coverage of `bench refinement`'s 20 multiclass cases from 0.760 / 0.777 / 0.770 to 0.744 /
    0.725 / 0.712 at budgets 0 / 4d / 10d (2026-12-06)."""
    variance = std**2
    pooled = _pooled_variances(
        variance if stated_factors is None else variance / stated_factors, fixed
    )
    player_weight = pooled.sum(axis=2)  # (m, P)
    free = player_weight > 0
    inverse_weight = np.where(free, 1.0 / np.where(free, player_weight, 1.0), 0.0)
    player_sums = values.sum(axis=2)  # (m, P)
    if targets is None:
        alpha = -player_sums * inverse_weight
        beta = np.zeros((values.shape[0], values.shape[2]))
    else:
        output_gaps = targets - values.sum(axis=1)  # (m, K)
        shares = pooled * inverse_weight[:, :, None]
        system = np.einsum("mjk,mjl->mkl", -shares, pooled)
        system += np.einsum("mk,kl->mkl", pooled.sum(axis=1), np.eye(values.shape[2]))
        right = output_gaps + np.einsum("mjk,mj->mk", shares, player_sums)
        beta = np.einsum("mkl,ml->mk", np.linalg.pinv(system), right)
        alpha = -(player_sums + np.einsum("mjk,mk->mj", pooled, beta)) * inverse_weight
    balanced = values + pooled * (alpha[:, :, None] + beta[:, None, :])
    if targets is not None:
        # Efficiency exact whatever the rounding of the solve, and of targets that sum to zero
        # only to within the outputs' tolerance.
        output_weight = pooled.sum(axis=1, keepdims=True)
        balanced += (targets - balanced.sum(axis=1))[:, None, :] * np.where(
            output_weight > 0, pooled / np.where(output_weight > 0, output_weight, 1.0), 0.0
        )
    return balanced, std
