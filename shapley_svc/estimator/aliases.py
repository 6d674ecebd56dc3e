"""Aliases: players that the context's rows cannot tell apart, and the uncertainty they carry.

Two columns that order the context's rows alike (copies, x and 20 x, x and log x, an indicator
and its complement) or, where a column is categorical or a player is a group, whose values
correspond one to one on every row, are aliases: any function of one equals a function of the
other on every context row, so no model's outputs there say which of them the model reads. The
surrogates fit to those outputs split the set's joint value between them as their own habits
say (a ridge member halves it), while the model's interventional values can put all of it on
one: a linear model reading one of two copies was explained half on each, uncertainty 0.59
against an error of 8.3 (QA, 2026-12-06). Only model calls on rows that mix one row's values
with another's (refine, calibrate) can tell them apart.

What ``explain`` states for an alias is therefore widened by the spread of the split the context
cannot decide (``widened_for_aliases``). The values do not change.
"""

import numpy as np

# A correspondence between two columns' values says that they are one variable only where values
# repeat: between two columns of distinct values (one row each) any pairing is one to one.
# Below two rows per value on average it is not taken as evidence (ordered columns need no such
# rule: the chance that unrelated columns order n rows alike is 2 / n!).
MIN_ROWS_PER_VALUE = 2


def _dense_codes(column: np.ndarray) -> np.ndarray:
    """(n,) int64 codes of a column's values in sorted order (NaN last, all NaN one value)."""
    _, codes = np.unique(column, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


def _first_seen_labels(codes: np.ndarray) -> np.ndarray:
    """(n,) the codes relabelled in the order their values first appear: two columns get the
    same labels exactly when their values correspond one to one."""
    n_values = int(codes.max()) + 1
    first = np.full(n_values, codes.size, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(codes.size, dtype=np.int64))
    relabel = np.empty(n_values, dtype=np.int64)
    relabel[np.argsort(first, kind="stable")] = np.arange(n_values, dtype=np.int64)
    return relabel[codes]


def _order_key(column: np.ndarray, codes: np.ndarray) -> bytes:
    """What a numeric column's order of the rows comes to, the same for the reverse order: its
    dense ranks (missing: -1), or those of its negation, whichever comes first where they
    differ. Two columns have the same key exactly when they order the rows alike or in reverse,
    missing in the same rows."""
    missing = np.isnan(column)
    ranks = np.where(missing, -1, codes)
    top = int(ranks.max())
    reverse = np.where(missing, -1, top - ranks)
    differ = np.flatnonzero(ranks != reverse)
    if differ.size and reverse[differ[0]] < ranks[differ[0]]:
        ranks = reverse
    return ranks.tobytes()


def alias_sets(
    rows: np.ndarray,
    categorical: np.ndarray,
    player_columns: list[np.ndarray] | None = None,
) -> list[list[int]]:
    """The sets of two or more players that ``rows`` (n, d) cannot tell apart, each sorted, in
    order of their first player.

    A player is one column (``player_columns`` None) or a group of columns. Two single numeric
    columns are aliases when they order the rows alike or in reverse, missing in the same rows;
    a categorical column or a group is the alias of a player whose values correspond to its own
    one to one, with at least ``MIN_ROWS_PER_VALUE`` rows per value. Players with one value
    throughout are no one's alias (their values are not in question: a constant column is worth
    zero wherever the row holds the constant).

    Players are bucketed by a key of their values (no pair is compared: 1,024 columns of 3,000
    distinct values took 134 s compared in pairs, all in one bucket of one-to-one columns).
    """
    n, d = rows.shape
    columns = [np.array([j]) for j in range(d)] if player_columns is None else player_columns
    is_categorical = np.zeros(d, dtype=bool)
    is_categorical[np.asarray(categorical, dtype=np.int64)] = True
    by_order: dict[bytes, list[int]] = {}
    by_labels: dict[bytes, list[int]] = {}
    plain: dict[int, bool] = {}
    for player, player_cols in enumerate(columns):
        codes = [_dense_codes(rows[:, j]) for j in player_cols]
        if len(codes) == 1:
            joint = codes[0]
        else:
            _, joint = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
            joint = joint.astype(np.int64).reshape(-1)
        labels = _first_seen_labels(joint)
        n_values = int(labels.max()) + 1
        if n_values == 1:
            continue
        plain[player] = len(player_cols) == 1 and not is_categorical[player_cols[0]]
        if plain[player]:
            by_order.setdefault(_order_key(rows[:, player_cols[0]], codes[0]), []).append(player)
        # A correspondence of values is evidence only where values repeat.
        if n >= MIN_ROWS_PER_VALUE * n_values:
            by_labels.setdefault(labels.tobytes(), []).append(player)

    parent = {player: player for player in plain}

    def root(player: int) -> int:
        while parent[player] != player:
            parent[player] = parent[parent[player]]
            player = parent[player]
        return player

    for bucket in by_order.values():
        for player in bucket[1:]:
            parent[root(player)] = root(bucket[0])
    for bucket in by_labels.values():
        for player in bucket:
            if not plain[player]:  # two plain columns must be ordered alike, as above
                for other in bucket:
                    parent[root(other)] = root(player)
    sets: dict[int, list[int]] = {}
    for player in sorted(parent):
        sets.setdefault(root(player), []).append(player)
    return sorted((members for members in sets.values() if len(members) > 1), key=lambda s: s[0])


def widened_for_aliases(
    values: np.ndarray, std: np.ndarray, sets: list[list[int]], null: np.ndarray | None = None
) -> np.ndarray:
    """(m, P, K) standard deviations of ``values`` widened, for each alias set, by the spread of
    the ways the set's joint value could split between its members.

    For a set of a members with values phi_j summing to T in a row, the model's split is T w
    with w anywhere on the simplex, uniformly (no model call says more): member j's true value
    has mean T / a and variance T^2 (a - 1) / (a^2 (a + 1)), and the variance added is the mean
    square error of phi_j, T^2 (a - 1) / (a^2 (a + 1)) + (T / a - phi_j)^2 (T^2 / 12 for an
    even split of two). A model that reads one member alone is then 1.7 standard deviations
    from an even split: outside the 80 % interval, inside the 95 % one. On the 54 cases of
    `bench combiner`'s families on the six development tables with aliases up to d = 12
    (2026-12-06, full contexts), the 80 % coverage of the aliases' values was 0.703 as
    stated before, 0.862 with this spread and 0.905 with that of the split's corners (T on one
    member, 0 on the others); of all values 0.787, 0.836 and 0.850. The ``null`` (m, P) players
    of a row (worth zero for any model) are left out of its sets.
    """
    variance = std**2
    for members in sets:
        index = np.asarray(members, dtype=np.int64)
        live = np.ones((values.shape[0], index.size), bool) if null is None else ~null[:, index]
        part = np.where(live[:, :, None], values[:, index], 0.0)  # (m, a, K)
        size = live.sum(axis=1)[:, None, None].astype(np.float64)  # (m, 1, 1)
        members_at_least_one = np.maximum(size, 1.0)
        total = part.sum(axis=1, keepdims=True)
        spread = total**2 * (size - 1) / (members_at_least_one**2 * (size + 1))
        spread = spread + (total / members_at_least_one - part) ** 2
        widen = live[:, :, None] & (size >= 2)
        variance[:, index] += np.where(widen, spread, 0.0)
    return np.sqrt(variance)
