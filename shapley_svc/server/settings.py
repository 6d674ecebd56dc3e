"""Server settings: command-line flags over ``SHAPLEY_SVC_*`` environment variables over defaults.

Read once at start-up; the running server never looks at the environment again.
"""

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from shapley_svc.contexts import ContextLimits

MIB = 1 << 20
ENV_PREFIX = "SHAPLEY_SVC_"


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Each field maps to ``--flag-name`` and
    ``SHAPLEY_SVC_FIELD_NAME``."""

    address: str = field(
        default="127.0.0.1:50051", metadata={"help": "host:port to serve gRPC on (port 0: any)"}
    )
    metrics_address: str = field(
        default="127.0.0.1:9464",
        metadata={"help": "host:port of the Prometheus /metrics endpoint; empty disables it"},
    )
    worker_threads: int = field(default=16, metadata={"help": "gRPC handler threads"})
    compute_threads: int = field(
        default=2, metadata={"help": "threads running fits and explanations (numba, nogil)"}
    )
    max_message_bytes: int = field(
        default=64 * MIB, metadata={"help": "largest message, both directions, in bytes"}
    )
    max_context_rows: int = field(default=20_000, metadata={"help": "largest n of a context"})
    max_features: int = field(default=4_096, metadata={"help": "largest d"})
    max_outputs: int = field(default=64, metadata={"help": "largest K"})
    max_explain_rows: int = field(
        default=100_000, metadata={"help": "most rows in one Explain message or stream chunk"}
    )
    max_budget: int = field(
        default=ContextLimits.max_budget,
        metadata={"help": "most model rows per explained row a Propose or Refine budget asks for"},
    )
    max_contexts: int = field(
        default=256, metadata={"help": "contexts held at once; least recently used evicted"}
    )
    max_context_store_bytes: int = field(
        default=2048 * MIB, metadata={"help": "bytes of contexts held at once; LRU evicted"}
    )
    max_concurrent_streams: int = field(
        default=16,
        metadata={"help": "ExplainStream and CreateContextStream calls served at once"},
    )
    grace_seconds: float = field(
        default=20.0, metadata={"help": "how long SIGTERM waits for in-flight requests"}
    )
    drain_notice_seconds: float = field(
        default=2.0,
        metadata={
            "help": "after SIGTERM, how long health reports NOT_SERVING while calls are still "
            "accepted, so that load balancers stop routing before the listener closes"
        },
    )
    tls_cert: str = field(default="", metadata={"help": "PEM certificate chain: enables TLS"})
    tls_key: str = field(default="", metadata={"help": "PEM private key of --tls-cert"})
    tls_client_ca: str = field(
        default="", metadata={"help": "PEM CA bundle: require client certificates (mTLS)"}
    )
    tokens_file: str = field(
        default="",
        metadata={"help": "file of accepted bearer tokens, one per line: enables token auth"},
    )
    artifact: str = field(
        default="", metadata={"help": "meta-learned artifact manifest (default: the shipped one)"}
    )
    context_dir: str = field(
        default="",
        metadata={
            "help": "directory where fitted contexts are saved by content id (e.g. a volume "
            "replicas share); a context not held is loaded from there before NOT_FOUND"
        },
    )

    def __post_init__(self) -> None:
        positive = (
            "worker_threads",
            "compute_threads",
            "max_message_bytes",
            "max_context_rows",
            "max_features",
            "max_outputs",
            "max_explain_rows",
            "max_budget",
            "max_contexts",
            "max_context_store_bytes",
            "max_concurrent_streams",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0; got {self.grace_seconds}")
        if self.drain_notice_seconds < 0:
            raise ValueError(f"drain_notice_seconds must be >= 0; got {self.drain_notice_seconds}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "tokens_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")

    def context_limits(self) -> ContextLimits:
        """The limits the context service enforces; an answer must fit in one message."""
        return ContextLimits(
            max_context_rows=self.max_context_rows,
            max_features=self.max_features,
            max_outputs=self.max_outputs,
            max_explain_rows=self.max_explain_rows,
            max_answer_bytes=self.max_message_bytes,
            max_contexts=self.max_contexts,
            max_store_bytes=self.max_context_store_bytes,
            max_budget=self.max_budget,
        )

    def tokens(self) -> tuple[bytes, ...]:
        """The accepted bearer tokens (empty: no token auth)."""
        if not self.tokens_file:
            return ()
        lines = Path(self.tokens_file).read_text().splitlines()
        tokens = tuple(line.strip().encode() for line in lines if line.strip())
        if not tokens:
            raise ValueError(f"tokens_file {self.tokens_file} holds no token")
        return tokens


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_from(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags, falling back to ``SHAPLEY_SVC_*`` variables, then defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="shapley-svc serve",
        description="Serve zero-shot Shapley attributions over gRPC.",
        epilog=f"Every flag can also be set as an environment variable: {ENV_PREFIX}<FLAG_NAME>. "
        "Stopping: on SIGTERM health says NOT_SERVING and calls are still accepted for "
        "--drain-notice-seconds, then new calls are refused and calls in flight get "
        "--grace-seconds to finish; after that they are cancelled (clients see UNAVAILABLE and "
        "may retry on another replica: context ids are content addresses). A fit can take "
        "minutes (d = 4,096, n = 20,000: 5 minutes on 2 cores): to let such fits finish, raise "
        "--grace-seconds, and the orchestrator's own limit above notice + grace (docker stop "
        "waits 10 s by default, then kills; Kubernetes 30 s).",
    )
    values = {}
    for spec in fields(Settings):
        env_name = ENV_PREFIX + spec.name.upper()
        default = spec.default
        if env_name in environ:
            raw = environ[env_name]
            try:
                default = type(spec.default)(raw)
            except ValueError:
                raise ValueError(f"{env_name}={raw!r} is not a valid {spec.name}") from None
        parser.add_argument(
            _flag(spec.name),
            type=type(spec.default),
            default=default,
            dest=spec.name,
            help=f"{spec.metadata['help']} (env {env_name}; default {spec.default!r})",
        )
    parsed = parser.parse_args(argv)
    for spec in fields(Settings):
        values[spec.name] = getattr(parsed, spec.name)
    return Settings(**values)
