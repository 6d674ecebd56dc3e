"""Feature groups: the players of the explained game when callers think in blocks of columns.

A grouping is a partition of the d columns into G named groups. The explained quantity is then
the Shapley value of each group in the game whose players are the groups (all of a group's
columns come from the row or all from the background), which is not in general the sum of its
columns' Shapley values; efficiency holds over the G values exactly as over d.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from shapley_svc.errors import InvalidArgumentError


@dataclass(frozen=True)
class Players:
    """Which player each column belongs to.

    Attributes
    ----------
    names : the G player names, in answer order.
    of_feature : (d,) int64, the player index of each column.
    """

    names: tuple[str, ...]
    of_feature: np.ndarray

    @property
    def count(self) -> int:
        return len(self.names)

    @cached_property
    def is_identity(self) -> bool:
        """One player per column, in column order: attributions need no grouping."""
        return self.count == self.of_feature.size and bool(
            np.array_equal(self.of_feature, np.arange(self.count))
        )

    def sum_columns(self, values: np.ndarray) -> np.ndarray:
        """Sum axis 1 (columns) of ``values`` into players: (m, d, ...) -> (m, G, ...).

        Exact for additive games, whose group values are the sums of their members' values.
        """
        if self.is_identity:
            return values
        order, starts = self._column_order
        return np.add.reduceat(values[:, order], starts, axis=1)

    @cached_property
    def _column_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Columns sorted by player and where each player's run starts: computed once, as every
        surrogate of every explain call sums through it."""
        order = np.argsort(self.of_feature, kind="stable")
        return order, np.searchsorted(self.of_feature[order], np.arange(self.count))

    @classmethod
    def identity(cls, feature_names: Sequence[str]) -> "Players":
        names = tuple(feature_names)
        return cls(names, np.arange(len(names), dtype=np.int64))


def parse_groups(groups: object, n_features: int) -> Players:
    """A validated partition of ``range(n_features)`` from the caller's groups.

    Parameters
    ----------
    groups : a mapping of group name to column indices, or a sequence of (name, indices) pairs.
        Every column must belong to exactly one group; groups are answered in the order given.
    n_features : d.
    """
    if isinstance(groups, Mapping):
        items = list(groups.items())
    elif isinstance(groups, Sequence) and not isinstance(groups, str | bytes):
        items = list(groups)
        for position, item in enumerate(items):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise InvalidArgumentError(
                    "groups", f"item {position} must be a (name, column indices) pair; got {item!r}"
                )
    else:
        raise InvalidArgumentError(
            "groups",
            "must map group names to column indices (or be a list of (name, indices) pairs); "
            f"got {type(groups).__name__}",
        )
    if not items:
        raise InvalidArgumentError("groups", "must hold at least one group")
    names: list[str] = []
    of_feature = np.full(n_features, -1, dtype=np.int64)
    for player, (name, members) in enumerate(items):
        name = str(name)
        if not name:
            raise InvalidArgumentError(
                "groups", f"must have names: group {player} has an empty name"
            )
        if name in names:
            raise InvalidArgumentError(
                "groups", f"must have distinct names: the name {name!r} is used twice"
            )
        try:
            indices = np.asarray(members)
        except ValueError:  # ragged, e.g. [[0, 1], [2]]: numpy's message names nothing
            raise InvalidArgumentError(
                "groups",
                f"must list non-empty integer column indices; group {name!r} has {members!r}",
            ) from None
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise InvalidArgumentError(
                "groups",
                f"must list non-empty integer column indices; group {name!r} has dtype "
                f"{indices.dtype}, shape {indices.shape}",
            )
        outside = indices[(indices < 0) | (indices >= n_features)]
        if outside.size:
            raise InvalidArgumentError(
                "groups",
                f"must hold columns of X; group {name!r} holds column {int(outside[0])}, "
                f"outside [0, {n_features})",
            )
        if np.unique(indices).size != indices.size:
            raise InvalidArgumentError(
                "groups", f"must list each column once; group {name!r} lists a column twice"
            )
        taken = indices[of_feature[indices] >= 0]
        if taken.size:
            column = int(taken[0])
            raise InvalidArgumentError(
                "groups",
                f"must not overlap; column {column} is in both {names[of_feature[column]]!r} and "
                f"{name!r}",
            )
        of_feature[indices] = player
        names.append(name)
    missing = np.flatnonzero(of_feature < 0)
    if missing.size:
        shown = ", ".join(str(int(j)) for j in missing[:8])
        more = f" and {missing.size - 8} more" if missing.size > 8 else ""
        raise InvalidArgumentError(
            "groups", f"must cover every column: {missing.size} in no group ({shown}{more})"
        )
    return Players(tuple(names), of_feature)
