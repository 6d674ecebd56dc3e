"""The gRPC server: ``shapley.v1.Shapley`` over the estimator's public API, with health,
reflection, metrics, TLS and token auth. Run it with ``shapley-svc serve``."""

from shapley_svc.server.app import RunningServer, serve, start_server, warm_up
from shapley_svc.server.settings import Settings, settings_from

__all__ = ["RunningServer", "Settings", "serve", "settings_from", "start_server", "warm_up"]
