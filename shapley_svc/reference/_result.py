"""The one result type of the reference engine."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShapleyValues:
    """Interventional Shapley values of a model's output, with their provenance.

    Attributes
    ----------
    values : (m, d) for a single-output model, (m, d, K) for K outputs.
    base_values : (m,) or (m, K): the mean model output over the background rows.
    predictions : (m,) or (m, K): the model output for each explained row;
        ``values.sum(axis=1) == predictions - base_values`` up to rounding.
    uncertainty : same shape as ``values``: the standard deviation of each estimate (its standard
        error); zeros for exact methods.
    method : which algorithm produced the values.
    exact : True when the values are exact up to floating-point rounding.
    model_evaluations : rows passed to the model (0 for closed forms and tree traversal).
    """

    values: np.ndarray
    base_values: np.ndarray
    predictions: np.ndarray
    uncertainty: np.ndarray
    method: str
    exact: bool
    model_evaluations: int

    @property
    def efficiency_gap(self) -> float:
        """Largest |sum_j phi_j - (prediction - base)| over rows and outputs."""
        gap = self.values.sum(axis=1) - (self.predictions - self.base_values)
        return float(np.max(np.abs(gap)))


def package(
    values: np.ndarray,
    base_value: np.ndarray,
    predictions: np.ndarray,
    single_output: bool,
    method: str,
    *,
    uncertainty: np.ndarray | None = None,
    model_evaluations: int = 0,
) -> ShapleyValues:
    """Build a :class:`ShapleyValues` from (m, d, K) values, (K,) base and (m, K) predictions.

    Drops the trailing output axis when the model has a single output.
    """
    m = values.shape[0]
    base_values = np.broadcast_to(base_value, (m, base_value.shape[0])).copy()
    exact = uncertainty is None
    if uncertainty is None:
        uncertainty = np.zeros_like(values)
    if single_output:
        values = values[:, :, 0]
        uncertainty = uncertainty[:, :, 0]
        base_values = base_values[:, 0]
        predictions = predictions[:, 0]
    return ShapleyValues(
        values=values,
        base_values=base_values,
        predictions=predictions,
        uncertainty=uncertainty,
        method=method,
        exact=exact,
        model_evaluations=int(model_evaluations),
    )
