"""The reference Shapley engine: exact and unbiased interventional Shapley values.

Every function takes the rows to explain and a background set, and returns a
:class:`ShapleyValues` whose values satisfy efficiency:
``values.sum(axis=1) == predictions - base_values`` up to floating-point rounding.

- :func:`exact_shapley`: any vectorised model, d <= 16, by enumerating coalitions.
- :func:`tree_shapley`: scikit-learn tree models, any d, interventional TreeSHAP;
  :class:`TreeBackground` prepares a model and background once for many batches.
- :func:`linear_shapley`, :func:`additive_shapley`: closed forms for linear models and sums of
  one- and two-feature (up to 16-feature) terms.
- :func:`kernel_machine_shapley`: RBF and Laplacian kernel machines (SVMs, kernel ridge), any d,
  as sums of product games.
- :func:`logistic_additive_shapley`: additive models inside a sigmoid, on the probability scale.
- :func:`sampled_shapley`: any model, any d, unbiased estimates with standard errors.
"""

from shapley_svc.reference._result import ShapleyValues
from shapley_svc.reference.closed_form import (
    additive_shapley,
    linear_shapley,
    logistic_additive_shapley,
)
from shapley_svc.reference.enumeration import MAX_EXACT_FEATURES, exact_shapley
from shapley_svc.reference.kernel_machines import kernel_machine_shapley
from shapley_svc.reference.sampling import sampled_shapley
from shapley_svc.reference.trees import TreeBackground, tree_shapley

__all__ = [
    "MAX_EXACT_FEATURES",
    "ShapleyValues",
    "TreeBackground",
    "additive_shapley",
    "exact_shapley",
    "kernel_machine_shapley",
    "linear_shapley",
    "logistic_additive_shapley",
    "sampled_shapley",
    "tree_shapley",
]
