"""Real tables' columns as the surrogates see them: missing values and categories.

The explained game stays the caller's raw columns. Each raw column becomes one or more numeric
design columns, and the design columns of one raw column form one player:

- a numeric column: its value, missing cells filled with the context's median, and, when the
  context has missing cells in it, a missing indicator;
- a categorical column: one indicator per level seen in the context (missing is a level of its
  own), levels seen on fewer than ``MIN_LEVEL_ROWS`` rows or beyond the ``MAX_LEVELS`` most
  frequent sharing one indicator; a code the context never showed sets no indicator (an unseen
  category). With three levels or more, one more column per output holds the level's rank by
  its mean output over the context: a tree then separates the levels that matter in one split
  (the grouping a native categorical split finds) instead of one indicator at a time, which
  left a 46-level column's credit to a correlated numeric column.

Every design column is a function of its raw column alone, so the Shapley values of the design
game whose players are the raw columns are exactly the raw columns' Shapley values: a missing
value or a category gets its credit like any other value, and a background row's missing value
stands in when its column is absent. A context without missing cells or categorical columns is
encoded as itself (``is_identity``), so such fits are unchanged.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator.groups import Players

# Indicators per categorical column. Every level with rows enough keeps its own: pooling the 14
# rarest of a 46-level column (at 33 rows each) into one indicator took the exact linear fit of a
# model linear in the levels from R^2 1.0 to 0.92, and its credit went to a correlated column.
# At 64 (until 2026-12-06), a 120-level column of a model additive in it (2,000 rows) had its 56
# rarest levels pooled: r against the exact values 0.81-0.90 over three seeds, 0.993-0.996 at
# 256; two 250-level columns, r 0.77 -> 0.94 for a fit 2.3x as long (1.5 -> 3.4 s). The design
# is wider for it: three 300-level columns of 10,000 rows took 18.8 s to fit instead of 5.1 s
# (explain unchanged). No development table has a column of more than 48 levels.
MAX_LEVELS = 256
# A level seen on one or two rows cannot be fitted out of fold: such levels share an indicator.
MIN_LEVEL_ROWS = 3


@dataclass(frozen=True)
class ColumnCoding:
    """How one raw column becomes design columns.

    Attributes
    ----------
    column : the raw column's index.
    categorical : whether its values are category codes.
    fill : numeric columns: the value that stands for a missing cell (the context's median of the
        present cells).
    missing_indicator : numeric columns: whether a missing indicator follows the value.
    levels : categorical columns: the codes with an indicator of their own, in code order.
    pooled : categorical columns: codes seen in the context that share the last indicator.
    missing_level : categorical columns: whether missing (NaN) has an indicator (last but one
        when ``pooled`` is non-empty, else last).
    ranks : categorical columns: (K, n_slots) each indicator's (slot's) rank by its mean output
        in the context, per output; (0, n_slots) when there are fewer than three slots.
    """

    column: int
    categorical: bool
    fill: float = 0.0
    missing_indicator: bool = False
    levels: np.ndarray = field(default_factory=lambda: np.empty(0))
    pooled: np.ndarray = field(default_factory=lambda: np.empty(0))
    missing_level: bool = False
    ranks: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    @property
    def n_slots(self) -> int:
        """Categorical columns: the indicators (levels, then missing, then pooled)."""
        return self.levels.size + int(self.missing_level) + int(self.pooled.size > 0)

    @property
    def width(self) -> int:
        if not self.categorical:
            return 1 + int(self.missing_indicator)
        return self.n_slots + self.ranks.shape[0]

    def slots(self, values: np.ndarray) -> np.ndarray:
        """(m,) int64: each code's indicator, or -1 for a code the context never showed."""
        slot = np.full(values.shape, -1, dtype=np.int64)
        if self.levels.size:  # none when every level was too rare for its own indicator
            position = np.searchsorted(self.levels, values)
            inside = position < self.levels.size
            found = inside & (self.levels[np.where(inside, position, 0)] == values)
            slot[found] = position[found]
        next_slot = self.levels.size
        if self.missing_level:
            slot[np.isnan(values)] = next_slot
            next_slot += 1
        if self.pooled.size:
            slot[np.isin(values, self.pooled)] = next_slot
        return slot

    def encode(self, values: np.ndarray, out: np.ndarray) -> None:
        """Write the (m, width) design columns of the raw (m,) ``values`` into ``out``."""
        if not self.categorical:
            missing = np.isnan(values)
            out[:, 0] = np.where(missing, self.fill, values)
            if self.missing_indicator:
                out[:, 1] = missing
            return
        slot = self.slots(values)
        n_slots = self.n_slots
        out[:, :n_slots] = slot[:, None] == np.arange(n_slots)[None, :]
        if self.ranks.shape[0]:
            # An unseen code stands in the middle of the ranks, as it sets no indicator.
            middle = (n_slots - 1) / 2.0
            out[:, n_slots:] = np.where(slot[:, None] >= 0, self.ranks.T[slot], middle)


def _numeric_coding(column: int, values: np.ndarray) -> ColumnCoding:
    # The fill is kept even for a column the context shows complete: a query row may still miss
    # it, and then stands at the context's middle (the context never showed what missing does).
    missing = np.isnan(values)
    present = values[~missing]
    fill = float(np.median(present)) if present.size else 0.0
    return ColumnCoding(column, categorical=False, fill=fill, missing_indicator=bool(missing.any()))


def _categorical_coding(column: int, values: np.ndarray, outputs: np.ndarray) -> ColumnCoding:
    missing = np.isnan(values)
    codes, counts = np.unique(values[~missing], return_counts=True)
    # The most frequent levels keep their own indicator (ties: the smaller code, so the choice
    # does not depend on row order).
    frequent = np.lexsort((codes, -counts))[:MAX_LEVELS]
    keep = np.sort(frequent[counts[frequent] >= MIN_LEVEL_ROWS])
    pooled = np.setdiff1d(codes, codes[keep])
    codes = codes[keep]
    coding = ColumnCoding(
        column, categorical=True, levels=codes, pooled=pooled, missing_level=bool(missing.any())
    )
    n_slots = coding.n_slots
    if n_slots < 3:  # two indicators already say all a rank would
        return replace(coding, ranks=np.empty((0, n_slots)))
    slot = coding.slots(values)
    counts = np.bincount(slot, minlength=n_slots)
    ranks = np.empty((outputs.shape[1], n_slots))
    for k in range(outputs.shape[1]):
        means = np.bincount(slot, weights=outputs[:, k], minlength=n_slots) / counts
        ranks[k, np.argsort(means, kind="stable")] = np.arange(n_slots)
    return replace(coding, ranks=ranks)


@dataclass(frozen=True)
class TableEncoder:
    """The design of a context's raw columns (see the module docstring), fitted on its rows.

    Attributes
    ----------
    codings : one ``ColumnCoding`` per raw column, in column order.
    column_of_design : (width,) int64: the raw column of each design column.
    """

    codings: tuple[ColumnCoding, ...]
    column_of_design: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, categorical: np.ndarray, outputs: np.ndarray) -> "TableEncoder":
        """Codings for the (n, d) raw context rows ``X`` (NaN: missing) whose ``categorical``
        columns (int64 indices) hold category codes, and the model's (n, K) ``outputs`` on them
        (which order the levels)."""
        is_categorical = np.zeros(X.shape[1], dtype=bool)
        is_categorical[categorical] = True
        codings = tuple(
            _categorical_coding(j, X[:, j], outputs)
            if is_categorical[j]
            else _numeric_coding(j, X[:, j])
            for j in range(X.shape[1])
        )
        column_of_design = np.repeat(
            np.arange(len(codings), dtype=np.int64), [coding.width for coding in codings]
        )
        return cls(codings, column_of_design)

    @property
    def is_identity(self) -> bool:
        """Every column is numeric with no missing cell in the context: the design is the rows."""
        return self.column_of_design.size == len(self.codings) and not any(
            coding.categorical for coding in self.codings
        )

    @property
    def width(self) -> int:
        return int(self.column_of_design.size)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(m, width) design of the (m, d) raw rows ``X``: ``X`` itself when the encoder is the
        identity, missing cells then filled with the context's medians."""
        if self.is_identity:
            missing = np.isnan(X)
            if not missing.any():
                return X
            fill = np.array([coding.fill for coding in self.codings])
            return np.where(missing, fill, X)
        design = np.empty((X.shape[0], self.width))
        start = 0
        for coding in self.codings:
            coding.encode(X[:, coding.column], design[:, start : start + coding.width])
            start += coding.width
        return design

    def players(self, players: Players | None, feature_names: list[str]) -> Players | None:
        """The players of the design game: the caller's groups (or one per raw column) mapped
        onto the design columns; None when the design is the rows and there are no groups."""
        if self.is_identity:
            return players
        if players is None:
            return Players(tuple(feature_names), self.column_of_design.copy())
        return Players(players.names, players.of_feature[self.column_of_design])


def categorical_columns(categorical, feature_names: list[str]) -> np.ndarray:
    """Validated, sorted int64 indices of the categorical columns, from indices or names."""
    d = len(feature_names)
    if categorical is None:
        return np.empty(0, dtype=np.int64)
    if isinstance(categorical, str | bytes) or not hasattr(categorical, "__iter__"):
        raise InvalidArgumentError(
            "categorical",
            f"must be a list of column indices or names; got {type(categorical).__name__}",
        )
    indices = []
    for item in categorical:
        if isinstance(item, str):
            if item not in feature_names:
                raise InvalidArgumentError(
                    "categorical", f"names column {item!r}, which is not a feature name"
                )
            indices.append(feature_names.index(item))
        elif isinstance(item, int | np.integer) and not isinstance(item, bool):
            if not 0 <= item < d:
                raise InvalidArgumentError(
                    "categorical", f"holds column {int(item)}, outside [0, {d})"
                )
            indices.append(int(item))
        else:
            raise InvalidArgumentError(
                "categorical", f"must hold column indices or names; got {item!r}"
            )
    result = np.array(indices, dtype=np.int64)
    if np.unique(result).size != result.size:
        repeated = int(np.flatnonzero(np.bincount(result) > 1)[0])
        raise InvalidArgumentError(
            "categorical", f"lists column {repeated} ({feature_names[repeated]!r}) twice"
        )
    return np.sort(result)


def check_codes(name: str, X: np.ndarray, categorical: np.ndarray, feature_names) -> None:
    """Refuse a categorical column's value that is not an integer code (NaN is missing)."""
    for j in categorical:
        values = X[:, j]
        bad = np.flatnonzero(~np.isnan(values) & (values != np.round(values)))
        if bad.size:
            raise InvalidArgumentError(
                name,
                f"column {int(j)} ({feature_names[j]!r}) is categorical and must hold integer "
                f"codes or NaN; found {values[bad[0]]}",
                row=int(bad[0]),
                column=int(j),
            )
