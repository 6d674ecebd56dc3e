"""What the estimator answers: an ``Explanation`` and the fit's ``Diagnostics``.

The diagnostics mirror the wire's ``OutputDiagnostics`` and ``SurrogateDiagnostics``
(protos/shapley/v1/shapley.proto) field for field, so the server copies them without renaming.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SurrogateDiagnostics:
    """One zoo member that applied to an output: its out-of-fold R^2 and its weight in the mix."""

    name: str
    oof_r2: float
    weight: float


@dataclass(frozen=True)
class CalibrationDiagnostics:
    """One output of a calibrated context: the scale of the weighted mix, and R^2 of the
    proxy's pair gaps against the model's over the calibration pairs, with the gate's weights
    (zero-shot) and with the calibrated ones (in-sample)."""

    scale: float
    gap_r2_zero_shot: float
    gap_r2_calibrated: float


@dataclass(frozen=True)
class OutputDiagnostics:
    """One output: the predicted fidelity (expected Pearson r against the true values), the
    members that applied, in zoo order, and how calibration changed them (None when not
    calibrated)."""

    predicted_fidelity: float
    surrogates: list[SurrogateDiagnostics]
    calibration: CalibrationDiagnostics | None = None


@dataclass(frozen=True)
class Diagnostics:
    """The fit's diagnostics: the artifact that weighed the members, one entry per output, and
    the model rows the caller scored to calibrate the context (0 when not calibrated)."""

    artifact_version: str
    outputs: list[OutputDiagnostics]
    calibration_rows: int = 0


@dataclass(frozen=True)
class Explanation:
    """Estimated interventional Shapley values with their uncertainty and provenance.

    Attributes
    ----------
    values : (m, P) for a single output, (m, P, K) for K outputs; P is d, or the number of
        groups when the explainer was fitted with ``groups``.
    base_values : (m,) or (m, K): the mean prediction over the background rows.
    uncertainty : same shape as ``values``: the standard deviation of each estimate.
    attribution_names : the P names of what is attributed to: the features, or the groups.
    diagnostics : the fit's diagnostics (see ``Diagnostics``).
    data : (m, d) the explained rows as given (as float64).
    grouped : True when the attributions are groups of columns: then ``data``'s d columns do
        not line up with the P values.
    predictions : the ``predictions_query`` given, or None; when given,
        ``values.sum(axis=1) == predictions - base_values``.
    display_data : None, or (m, d) objects when the explainer coded DataFrame columns: the
        query frame's own values (labels, unseen ones included; None for a missing label), or
        for array rows the labels behind the codes (None for missing or unseen codes).
    model_rows : rows of the caller's model this explanation used per explained row: 0 for a
        zero-shot one, the proposal's rows for a refined one (whose predictions are then the
        given or scored ones, and whose uncertainty is the sampling error).
    """

    values: np.ndarray
    base_values: np.ndarray
    uncertainty: np.ndarray
    attribution_names: list[str]
    diagnostics: Diagnostics
    data: np.ndarray
    grouped: bool = False
    predictions: np.ndarray | None = None
    display_data: np.ndarray | None = None
    model_rows: int = 0

    def to_shap(self):
        """The values as a ``shap.Explanation`` (needs shap installed), for shap's plots.

        Ungrouped, the explained rows go along as ``data``, so that a beeswarm colours each dot
        by its feature's value and a waterfall prints the values; ``uncertainty`` is its
        ``error_std``; labels of coded categorical columns go along as ``display_data``. A
        grouped explanation has no single value per group: it carries the values, base values
        and group names alone. (The Python client's ``to_shap`` gives the same.)
        """
        try:
            import shap
        except ImportError:
            raise ImportError("to_shap() needs the shap package: pip install shap") from None
        return shap.Explanation(
            values=self.values,
            base_values=self.base_values,
            data=None if self.grouped else self.data,
            display_data=None if self.grouped else self.display_data,
            feature_names=list(self.attribution_names),
            error_std=self.uncertainty,
        )

    def to_pandas(self):
        """A tidy ``pandas.DataFrame`` (needs pandas installed): one row per explained row and
        attribution (and output, when there are K > 1), with columns ``row``, ``attribution``
        (categorical, in ``attribution_names`` order), ``output`` (only when K > 1), ``value``
        and ``uncertainty``, like the Python client's ``to_pandas``."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs the pandas package: pip install pandas") from None
        values = self.values if self.values.ndim == 3 else self.values[:, :, None]
        uncertainty = self.uncertainty.reshape(values.shape)
        m, n_players, n_outputs = values.shape
        rows, players, outputs = np.meshgrid(
            np.arange(m), np.arange(n_players), np.arange(n_outputs), indexing="ij"
        )
        columns = {
            "row": rows.ravel(),
            "attribution": pd.Categorical.from_codes(
                players.ravel(), categories=list(self.attribution_names)
            ),
        }
        if self.values.ndim == 3:
            columns["output"] = outputs.ravel()
        columns["value"] = values.ravel()
        columns["uncertainty"] = uncertainty.ravel()
        return pd.DataFrame(columns)
