"""Meta-training: fit the combiner's parameters on examples from the synthetic prior.

1. The gate: softmax weights over the zoo minimising, per example, the squared error of the
   combined attributions relative to the truth's energy (every example counts equally whatever
   its scale). The loss is a quadratic form in the weights, so each example reduces to a Gram
   matrix and the fit is a small smooth problem for L-BFGS.
2. The uncertainty: spread multiplier and floor by Gaussian likelihood of the errors, then one
   factor that brings 80 % intervals to 80 % coverage on held-out examples.
3. Predicted fidelity: ridge regression of each example's measured Pearson r.
"""

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from shapley_svc.estimator.combiner import (
    CombinerParameters,
    combine,
    fidelity_features,
    member_weights,
    normalised_features,
    uncertainty_terms,
)
from shapley_svc.estimator.context import GLOBAL_FEATURES
from shapley_svc.estimator.surrogates import ZOO
from shapley_svc.training.examples import Example

Z_80 = 1.2815515655446004


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def fit_gate(
    examples: list[Example], params: CombinerParameters, l2: float = 1e-2
) -> CombinerParameters:
    n_surrogates, n_global = len(ZOO), len(GLOBAL_FEATURES)
    grams, crosses, features, locals_, masks = [], [], [], [], []
    for example in examples:
        values = example.surrogate_values.reshape(n_surrogates, -1)
        truth = example.truth.ravel()
        energy = truth @ truth / truth.size
        if energy <= 0:
            continue
        grams.append(values @ values.T / truth.size / energy)
        crosses.append(values @ truth / truth.size / energy)
        features.append(normalised_features(example.features, params))
        locals_.append(example.features.surrogate_features)
        masks.append(example.features.available)
    grams, crosses = np.array(grams), np.array(crosses)
    features, locals_, masks = np.array(features), np.array(locals_), np.array(masks)
    n = len(grams)

    def unpack(theta):
        bias = theta[:n_surrogates]
        weights_global = theta[n_surrogates : n_surrogates * (1 + n_global)].reshape(
            n_surrogates, n_global
        )
        local = theta[n_surrogates * (1 + n_global) :]
        return bias, weights_global, local

    def loss_and_gradient(theta):
        bias, weights_global, local = unpack(theta)
        logits = bias + features @ weights_global.T + locals_ @ local
        logits = np.where(masks, logits, -np.inf)
        logits = logits - logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        aw = np.einsum("nst,nt->ns", grams, w)
        loss_each = np.einsum("ns,ns->n", w, aw) - 2 * np.einsum("ns,ns->n", w, crosses) + 1.0
        grad_w = 2 * aw - 2 * crosses
        grad_logits = w * (grad_w - np.einsum("ns,ns->n", w, grad_w)[:, None]) / n
        grad_bias = grad_logits.sum(axis=0)
        grad_global = grad_logits.T @ features + 2 * l2 * weights_global
        grad_local = np.einsum("ns,nsp->p", grad_logits, locals_) + 2 * l2 * local
        loss = loss_each.mean() + l2 * (np.sum(weights_global**2) + np.sum(local**2))
        return loss, np.concatenate([grad_bias, grad_global.ravel(), grad_local])

    theta0 = np.concatenate([params.gate_bias, params.gate_global.ravel(), params.gate_surrogate])
    result = minimize(
        loss_and_gradient, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 2000}
    )
    bias, weights_global, local = unpack(result.x)
    return replace(params, gate_bias=bias, gate_global=weights_global, gate_surrogate=local)


def _combined(example: Example, params: CombinerParameters):
    weights = member_weights(example.features, params)
    combined = np.einsum("s,smd->md", weights, example.surrogate_values)
    spread = np.einsum("s,smd->md", weights, (example.surrogate_values - combined) ** 2)
    return weights, combined, spread


def fit_uncertainty(examples: list[Example], params: CombinerParameters) -> CombinerParameters:
    """Spread multiplier (per context) and floor by Gaussian likelihood of the errors."""
    rows = []
    for example in examples:
        _, combined, spread = _combined(example, params)
        features = normalised_features(example.features, params)
        d = example.truth.shape[1]
        output_scale = example.features.output_scale
        errors = (example.truth - combined) / output_scale
        rows.append(
            (
                features,
                spread.ravel() / output_scale**2,
                errors.ravel(),
                (example.truth_error.ravel() / output_scale) ** 2,
                1.0 / d,
            )
        )
    n_global = len(GLOBAL_FEATURES)

    def negative_log_likelihood(theta):
        total, count = 0.0, 0
        for features, spread, errors, label_variance, floor_unit in rows:
            variance = (
                np.exp(theta[0] + theta[1 : 1 + n_global] @ features) * spread
                + np.exp(theta[-1]) * floor_unit
                + label_variance
                + 1e-12
            )
            total += np.sum(np.log(variance) + errors**2 / variance)
            count += errors.size
        return 0.5 * total / count + 1e-3 * np.sum(theta[1 : 1 + n_global] ** 2)

    theta0 = np.concatenate([params.spread_log_scale, [params.floor_log_variance]])
    result = minimize(negative_log_likelihood, theta0, method="L-BFGS-B", options={"maxiter": 500})
    return replace(params, spread_log_scale=result.x[:-1], floor_log_variance=float(result.x[-1]))


def evaluate(example: Example, params: CombinerParameters) -> dict:
    """The estimator's final output on an example (projected), and its accuracy."""
    weights = member_weights(example.features, params)
    spread_scale, floor = uncertainty_terms(example.features, params, example.truth.shape[1])
    values, std = combine(
        example.surrogate_values, weights, spread_scale, floor, example.target_sums
    )
    errors = np.abs(values - example.truth)
    total_std = np.sqrt(std**2 + example.truth_error**2)
    return {
        "values": values,
        "std": std,
        "pearson": _pearson(values, example.truth),
        "covered": float(np.mean(errors <= Z_80 * total_std)),
        "weights": weights,
    }


def calibrate_coverage(examples: list[Example], params: CombinerParameters) -> CombinerParameters:
    """One factor on all variances so 80 % intervals cover 80 % of held-out values."""
    low, high = -4.0, 4.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        trial = replace(
            params,
            spread_log_scale=params.spread_log_scale
            + np.r_[middle, np.zeros(len(GLOBAL_FEATURES))],
            floor_log_variance=params.floor_log_variance + middle,
        )
        coverage = np.mean([evaluate(e, trial)["covered"] for e in examples])
        if coverage < 0.8:
            low = middle
        else:
            high = middle
    middle = 0.5 * (low + high)
    return replace(
        params,
        spread_log_scale=params.spread_log_scale + np.r_[middle, np.zeros(len(GLOBAL_FEATURES))],
        floor_log_variance=params.floor_log_variance + middle,
    )


def fit_fidelity(
    examples: list[Example], params: CombinerParameters, l2: float = 1.0
) -> CombinerParameters:
    """Ridge regression of measured Pearson r on the fidelity features."""
    rows, targets = [], []
    for example in examples:
        weights = member_weights(example.features, params)
        rows.append(fidelity_features(example.features, params, weights))
        targets.append(evaluate(example, params)["pearson"])
    A, y = np.array(rows), np.array(targets)
    mean_a, mean_y = A.mean(axis=0), y.mean()
    centred = A - mean_a
    coef = np.linalg.solve(centred.T @ centred + l2 * np.eye(A.shape[1]), centred.T @ (y - mean_y))
    return replace(params, fidelity_coef=coef, fidelity_intercept=float(mean_y - mean_a @ coef))


def meta_train(train: list[Example], validation: list[Example]) -> CombinerParameters:
    """All three stages; feature normalisation from the training examples."""
    features = np.array([e.features.global_features for e in train])
    scale = features.std(axis=0)
    params = replace(
        CombinerParameters.neutral(),
        feature_mean=features.mean(axis=0),
        feature_scale=np.where(scale > 1e-12, scale, 1.0),
    )
    params = fit_gate(train, params)
    params = fit_uncertainty(train, params)
    params = calibrate_coverage(validation, params)
    return fit_fidelity(train, params)
