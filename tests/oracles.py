"""Test oracles written straight from the definitions, sharing no code with the package."""

from itertools import combinations
from math import factorial

import numpy as np


def brute_force_shapley(predict, X, background, groups=None):
    """Interventional Shapley values by the textbook formula, shape (m, d, K) always.

    phi_j = sum over S not containing j of |S|! (d-|S|-1)! / d! * (v(S + j) - v(S)),
    v(S) = mean over background rows z of predict(x on S, z elsewhere).

    With ``groups`` (a list of column lists), the players are the groups: shape (m, G, K).
    """
    X = np.asarray(X, dtype=float)
    background = np.asarray(background, dtype=float)
    groups = [[j] for j in range(X.shape[1])] if groups is None else [list(g) for g in groups]
    d = len(groups)
    results = []
    for x in X:
        values = {}
        for size in range(d + 1):
            for subset in combinations(range(d), size):
                columns = [c for player in subset for c in groups[player]]
                mixed = background.copy()
                mixed[:, columns] = x[columns]
                outputs = np.asarray(predict(mixed), dtype=float).reshape(len(background), -1)
                values[frozenset(subset)] = outputs.mean(axis=0)
        n_outputs = values[frozenset()].shape[0]
        phi = np.zeros((d, n_outputs))
        for j in range(d):
            others = [k for k in range(d) if k != j]
            for size in range(d):
                weight = factorial(size) * factorial(d - size - 1) / factorial(d)
                for subset in combinations(others, size):
                    s = frozenset(subset)
                    phi[j] += weight * (values[s | {j}] - values[s])
        results.append(phi)
    return np.array(results)


def as_3d(values):
    """(m, d) -> (m, d, 1); (m, d, K) unchanged."""
    values = np.asarray(values)
    return values[:, :, None] if values.ndim == 2 else values


def random_polynomial_game(rng, d, n_outputs):
    """A vectorised model with main effects, pairwise and three-way interactions, K outputs."""
    linear = rng.normal(size=(d, n_outputs))
    pairs = (
        [
            (tuple(rng.choice(d, size=2, replace=False)), rng.normal(size=n_outputs))
            for _ in range(d)
        ]
        if d >= 2
        else []
    )
    triples = (
        [
            (tuple(rng.choice(d, size=3, replace=False)), rng.normal(size=n_outputs))
            for _ in range(2)
        ]
        if d >= 3
        else []
    )

    def predict(Z):
        out = np.tanh(Z) @ linear
        for (a, b), w in pairs:
            out += np.outer(Z[:, a] * Z[:, b], w)
        for (a, b, c), w in triples:
            out += np.outer(np.sin(Z[:, a] + Z[:, b] * Z[:, c]), w)
        return out[:, 0] if n_outputs == 1 else out

    return predict
