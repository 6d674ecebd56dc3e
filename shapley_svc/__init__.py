"""shapley-svc: Shapley-value attributions for models the service never calls."""

__version__ = "0.1.0"
