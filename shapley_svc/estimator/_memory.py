"""What a fitted object holds in memory, estimated by walking it (numpy buffers dominate)."""

import sys

import numpy as np

_TREE_NODE_BYTES = 64  # scikit-learn's Cython Node struct


def held_bytes(root: object) -> int:
    """Bytes reachable from ``root``: numpy buffers, scikit-learn trees, Python containers."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            # A view costs its base, counted once.
            base = item.base if isinstance(item.base, np.ndarray) else None
            if base is not None:
                stack.append(base)
            else:
                total += item.nbytes
            continue
        if type(item).__name__ == "Tree" and hasattr(item, "node_count"):
            values_per_node = int(np.prod(item.value.shape[1:]))
            total += item.node_count * (_TREE_NODE_BYTES + 8 * values_per_node)
            continue
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return total
