"""shapley-svc: Shapley-value attributions for models the service never calls."""

from shapley_svc._numba_cache import use_user_cache

use_user_cache()  # before any kernel imports numba: see shapley_svc/_numba_cache.py

__version__ = "0.1.0"


_ESTIMATOR_NAMES = ("Diagnostics", "Explanation", "FitCancelled", "ZeroShotExplainer")


def __getattr__(name: str):
    # The estimator pulls in scikit-learn and the numba kernels: import it only when asked.
    if name in _ESTIMATOR_NAMES:
        from shapley_svc import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'shapley_svc' has no attribute {name!r}")


__all__ = ["Diagnostics", "Explanation", "FitCancelled", "ZeroShotExplainer", "__version__"]
