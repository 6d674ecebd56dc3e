"""Server settings: command-line flags over ``SHAPLEY_SVC_*`` environment variables over defaults.

Read once at start-up; the running server never looks at the environment again.
"""

import argparse
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from shapley_svc.contexts import ContextLimits

MIB = 1 << 20
ENV_PREFIX = "SHAPLEY_SVC_"
MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's channel options are C ints
MAX_INTEGER = 2**63 - 1  # the Limits message's int64 fields carry them to clients
MAX_SECONDS = 86_400.0  # a day: a longer notice or grace period is a typo
# Addresses grpc binds that are not host:port; their form is grpc's to check.
_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "dns:", "ipv4:", "ipv6:")


class SettingError(ValueError):
    """A setting's value refused: ``template`` names the settings as ``{0}``, ``{1}``...

    ``str()`` names them as fields; :func:`settings_from` names them as the user typed them
    (``--flag`` or ``SHAPLEY_SVC_VARIABLE``)."""

    def __init__(self, template: str, *names: str):
        self.template = template
        self.names = names
        super().__init__(template.format(*names))

    def render(self, label) -> str:
        return self.template.format(*(label(name) for name in self.names))


def port_problem(address: str, *, require_port: bool = True) -> str | None:
    """Why ``address`` (host:port) cannot be listened on or dialled, or None. Ports outside
    0-65535 are refused (grpc would silently wrap them); with ``require_port=False`` an address
    without a numeric port (a grpc target such as dns:///host) is left to grpc."""
    if address.startswith(_SCHEMES):
        return None
    _, colon, port = address.rpartition(":")
    try:
        number = int(port) if colon else None
    except ValueError:
        number = None
    if number is None:
        if not require_port:
            return None
        return f"must be host:port with a numeric port; got {address!r}"
    if not 0 <= number <= 65535:
        return f"port must be in 0-65535; got {number} in {address!r}"
    return None


def pem_problem(path: str, kind: str) -> str | None:
    """Why the file at ``path`` is not a readable PEM file holding ``kind`` ("CERTIFICATE",
    "PRIVATE KEY"), or None. A marker check only: grpc parses it at start-up."""
    file = Path(path)
    if not file.is_file():
        return f"no such file: {path}" if not file.exists() else f"not a regular file: {path}"
    try:
        data = file.read_bytes()
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    if b"-----BEGIN " not in data or f"{kind}-----".encode() not in data:
        return f"{path} is not a valid PEM file (no '-----BEGIN ... {kind}-----' block)"
    return None


def directory_problem(path: str) -> str | None:
    """Why files cannot be saved in the folder ``path``, or None: it is a writable directory,
    made here when it does not exist yet (as the server would make it). Checked at start-up, so
    that a bad ``--context-dir`` stops ``serve`` before it binds instead of failing every fit's
    save. Making it, not asking whether its parent is writable, also finds a dangling link and a
    parent that only says it is writable (/proc, /sys): both passed, then stopped the server
    after it had bound."""
    folder = Path(path)
    if os.path.islink(folder) and not folder.exists():
        return f"{path} is a symbolic link to nothing ({os.readlink(folder)})"
    if folder.exists() and not folder.is_dir():
        return f"{path} exists and is not a directory"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create {path}: {error.strerror or error}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def _check_tls_files(cert: str, key: str, client_ca: str) -> None:
    """Load the TLS files as grpc will at bind, so that a key that does not match its
    certificate, an encrypted key or a damaged block is refused naming its flag, not found at
    bind as a failure to listen. OpenSSL parses them as grpc's BoringSSL does."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # This check is of the files alone; grpc decides what it accepts. OpenSSL's default
    # security level refused a matching RSA-1024 pair (EE_KEY_TOO_SMALL) that grpc serves with.
    tls.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        # A password is given so that an encrypted key fails here instead of prompting on the
        # terminal: grpc takes no password either.
        tls.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as error:
        raise SettingError(
            f"{{0}} and {{1}} are not a certificate and its private key ({error.reason or error})",
            "tls_cert",
            "tls_key",
        ) from None
    if client_ca:
        try:
            tls.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as error:
            raise SettingError(
                f"{{0}}: {client_ca} holds no readable certificate ({error.reason or error})",
                "tls_client_ca",
            ) from None


def read_tokens(path: str) -> tuple[bytes, ...]:
    """The bearer tokens of ``path``, one per line; raises :class:`SettingError`."""
    try:
        # utf-8-sig: editors on Windows start a UTF-8 file with a byte-order mark, which
        # would otherwise be part of the first token and make it unusable.
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise SettingError(
            f"{{0}}: cannot read {path}: {error.strerror or error}", "tokens_file"
        ) from None
    except UnicodeDecodeError as error:
        raise SettingError(
            f"{{0}}: {path} is not UTF-8 text ({error.reason} at byte {error.start})",
            "tokens_file",
        ) from None
    # Lines end at \n (\r\n too, by strip): str.splitlines also splits at form feeds,
    # vertical tabs and U+2028, which cut 'a\x0cVeryLongSecretPart' into a live token 'a'.
    tokens = tuple(line.strip() for line in text.split("\n") if line.strip())
    if not tokens:
        raise SettingError(f"{{0}}: {path} holds no token (one per line)", "tokens_file")
    for number, token in enumerate(tokens, 1):
        # A gRPC metadata value is printable ASCII: no client can send any other token.
        unsendable = next((c for c in token if not " " <= c <= "~"), None)
        if unsendable is not None:
            raise SettingError(
                f"{{0}}: {path}: token {number} holds {unsendable!r}, which no gRPC client can "
                "send (a token is printable ASCII)",
                "tokens_file",
            )
    return tuple(token.encode() for token in tokens)


def thread_variable_problem(environ: Mapping[str, str]) -> str | None:
    """What is wrong with the environment's thread counts the server's libraries read, if
    anything: they failed at the first fit or kernel import, with a traceback, after the port
    was bound (QA, 2026-12-06)."""
    numba_threads = environ.get("NUMBA_NUM_THREADS", "")
    if numba_threads and not (numba_threads.isdigit() and int(numba_threads) >= 1):
        return f"NUMBA_NUM_THREADS={numba_threads!r} must be a whole number >= 1 (numba's threads)"
    loky_cpus = environ.get("LOKY_MAX_CPU_COUNT")
    if loky_cpus is not None:
        try:
            int(loky_cpus)
        except ValueError:
            return (
                f"LOKY_MAX_CPU_COUNT={loky_cpus!r} must be a whole number: scikit-learn reads it "
                "(through joblib) for its fits' threads and fails on anything else"
            )
    return None


def _port_of(address: str) -> str:
    return address.rpartition(":")[2] if address else ""


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Each field maps to ``--flag-name`` and
    ``SHAPLEY_SVC_FIELD_NAME``."""

    address: str = field(
        default="127.0.0.1:50051", metadata={"help": "host:port to serve gRPC on (port 0: any)"}
    )
    metrics_address: str = field(
        default="127.0.0.1:9464",
        metadata={
            "help": "host:port of the Prometheus /metrics endpoint (port 0: any, logged); "
            "empty disables it"
        },
    )
    health_address: str = field(
        default="",
        metadata={
            "help": "host:port of a plaintext gRPC health endpoint on threads of its own, for "
            "probes: it answers while every handler thread waits on a fit, and without TLS or "
            "tokens (the same SERVING / NOT_SERVING as --address); empty disables it"
        },
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
                raise SettingError(f"{{0}} must be >= 1; got {getattr(self, name)}", name)
            if getattr(self, name) > MAX_INTEGER:
                # GetServerInfo failed INTERNAL on a limit its int64 field cannot hold.
                raise SettingError(
                    f"{{0}} must be <= {MAX_INTEGER} (2**63 - 1); got {getattr(self, name)}", name
                )
        if self.max_message_bytes > MAX_MESSAGE_BYTES:
            raise SettingError(
                f"{{0}} must be <= {MAX_MESSAGE_BYTES} (2**31 - 1); got {self.max_message_bytes}",
                "max_message_bytes",
            )
        for name in ("grace_seconds", "drain_notice_seconds"):
            seconds = getattr(self, name)
            if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS):
                raise SettingError(f"{{0}} must be in [0, {MAX_SECONDS:.0f}]; got {seconds}", name)
        problem = port_problem(self.address)
        if problem:
            raise SettingError(f"{{0}}: {problem}", "address")
        for name in ("metrics_address", "health_address"):
            if getattr(self, name):
                problem = port_problem(getattr(self, name))
                if problem:
                    raise SettingError(f"{{0}}: {problem}", name)
        ports = {"address": self.address, "metrics_address": self.metrics_address}
        for name, other in ports.items():
            if self.health_address and _port_of(self.health_address) == _port_of(other) != "0":
                raise SettingError("{0} must be another port than {1}", "health_address", name)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingError("{0} and {1} must be given together", "tls_cert", "tls_key")
        if self.tls_client_ca and not self.tls_cert:
            raise SettingError(
                "{0} (mTLS) needs {1} and {2}", "tls_client_ca", "tls_cert", "tls_key"
            )
        for name, kind in (
            ("tls_cert", "CERTIFICATE"),
            ("tls_key", "PRIVATE KEY"),
            ("tls_client_ca", "CERTIFICATE"),
        ):
            path = getattr(self, name)
            problem = pem_problem(path, kind) if path else None
            if problem:
                raise SettingError(f"{{0}}: {problem}", name)
        if self.tls_cert:
            _check_tls_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.tokens_file:
            if not Path(self.tokens_file).is_file():
                raise SettingError(f"{{0}}: no such file: {self.tokens_file}", "tokens_file")
            read_tokens(self.tokens_file)
        if self.context_dir:
            problem = directory_problem(self.context_dir)
            if problem:
                raise SettingError(f"{{0}}: {problem}", "context_dir")
        if self.artifact and not os.path.isfile(self.artifact):
            # Its content (the weights' sha256) is checked as it loads, after the server binds.
            raise SettingError(f"{{0}}: {self.artifact!r} is not a file", "artifact")

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
        return read_tokens(self.tokens_file)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_UNSET = object()


def settings_from(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags, falling back to ``SHAPLEY_SVC_*`` variables, then defaults.

    A refused value raises ValueError naming the flag, or the variable it came from."""
    environ = os.environ if environ is None else environ
    values = {}
    parser = argparse.ArgumentParser(
        prog="shapley-svc serve",
        description="Serve zero-shot Shapley attributions over gRPC.",
        epilog=f"Every flag can also be set as an environment variable: {ENV_PREFIX}<FLAG_NAME>. "
        "Stopping: on SIGTERM health says NOT_SERVING and calls are still accepted for "
        "--drain-notice-seconds, then new calls are refused and calls in flight get "
        "--grace-seconds to finish; after that they are cancelled (clients see UNAVAILABLE and "
        "may retry on another replica: context ids are content addresses). A fit can take "
        "minutes (d = 4,096, n = 20,000: about 6.5 minutes on 2 cores): to let such fits "
        "finish, raise --grace-seconds, and the orchestrator's own limit above notice + grace "
        "(docker stop waits 10 s by default, then kills; Kubernetes 30 s).",
    )
    from_env = {}
    for spec in fields(Settings):
        env_name = ENV_PREFIX + spec.name.upper()
        default = spec.default
        if env_name in environ:
            raw = environ[env_name]
            try:
                default = type(spec.default)(raw)
            except ValueError:
                raise ValueError(f"{env_name}={raw!r} is not a valid {spec.name}") from None
            from_env[spec.name] = env_name
        parser.add_argument(
            _flag(spec.name),
            type=type(spec.default),
            default=_UNSET,
            dest=spec.name,
            help=f"{spec.metadata['help']} (env {env_name}; default {spec.default!r})",
        )
        values[spec.name] = default
    parsed = parser.parse_args(argv)
    typed = set()
    for spec in fields(Settings):
        value = getattr(parsed, spec.name)
        if value is not _UNSET:
            values[spec.name] = value
            typed.add(spec.name)

    def label(name: str) -> str:
        """The setting as the user gave it: the flag, else its variable; one given neither way
        by both names (`health` takes the variables alone, and named a flag it does not have)."""
        if name in typed:
            return _flag(name)
        if from_env.get(name):
            return from_env[name]
        return f"{_flag(name)} (or {ENV_PREFIX}{name.upper()})"

    try:
        return Settings(**values)
    except SettingError as error:
        raise ValueError(error.render(label)) from None
