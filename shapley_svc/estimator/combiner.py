"""The meta-learned combiner: which surrogates to trust in a context, and how much.

Weights are a softmax over the zoo members that apply, of a linear function of the context's
features (shared across cells, so the combination is a convex mix of exact surrogate
attributions). Parameters come from meta-training on the synthetic prior (``shapley_svc.training``)
and are loaded from the shipped artifact.
"""

from dataclasses import dataclass

import numpy as np

from shapley_svc.estimator.context import GLOBAL_FEATURES, SURROGATE_FEATURES, ContextFeatures
from shapley_svc.estimator.surrogates import ZOO
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
        sums,
        target_sums is not None,
        values,
        std,
    )
    return values, std
