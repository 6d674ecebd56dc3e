"""Prometheus metrics in the text exposition format, served on their own port.

A few counters and one histogram do not justify a client library: this module keeps them under
one lock and renders them on each scrape of ``/metrics``.
"""

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Values the context store owns, read on each scrape: name -> (Prometheus type, help text).
# Evictions only ever grow, so they are a counter: rate() and increase() then work on them.
STORE_METRICS = {
    "contexts_held": ("gauge", "Contexts held in memory."),
    "context_store_bytes": ("gauge", "Bytes of the contexts held in memory."),
    "context_evictions_total": (
        "counter",
        "Contexts evicted, least recently used first, to stay within the store's limits.",
    ),
    "context_fits_total": ("counter", "Contexts fitted from their data."),
    "context_loads_total": ("counter", "Contexts loaded from --context-dir instead of fitted."),
    "context_calibrations_total": ("counter", "Contexts calibrated on the caller's model rows."),
    "context_saves_failed_total": (
        "counter",
        "Fitted or calibrated contexts that could not be saved to --context-dir (held all the "
        "same; the log says why).",
    ),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latency_counts: dict[str, list[int]] = {}
        self._latency_sum: dict[str, float] = defaultdict(float)
        self._rows_explained = 0
        # Read on each scrape: the STORE_METRICS values, owned by the context store (zero until
        # the server has one).
        self.store_values: Callable[[], dict[str, float]] = dict

    def observe(self, method: str, code: str, seconds: float) -> None:
        with self._lock:
            self._requests[(method, code)] += 1
            counts = self._latency_counts.setdefault(method, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum[method] += seconds

    def add_rows_explained(self, rows: int) -> None:
        with self._lock:
            self._rows_explained += rows

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP shapley_requests_total RPCs handled, by method and status code.",
                "# TYPE shapley_requests_total counter",
            ]
            for (method, code), count in sorted(self._requests.items()):
                lines.append(f'shapley_requests_total{{method="{method}",code="{code}"}} {count}')
            lines += [
                "# HELP shapley_errors_total RPCs that ended with a status other than OK.",
                "# TYPE shapley_errors_total counter",
            ]
            errors: dict[str, int] = defaultdict(int)
            for (_, code), count in self._requests.items():
                if code != "OK":
                    errors[code] += count
            for code, count in sorted(errors.items()):
                lines.append(f'shapley_errors_total{{code="{code}"}} {count}')
            lines += [
                "# HELP shapley_request_seconds Wall time of RPCs, by method.",
                "# TYPE shapley_request_seconds histogram",
            ]
            for method, counts in sorted(self._latency_counts.items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
                    cumulative += count
                    lines.append(
                        f'shapley_request_seconds_bucket{{method="{method}",le="{bound}"}} '
                        f"{cumulative}"
                    )
                cumulative += counts[-1]
                lines.append(
                    f'shapley_request_seconds_bucket{{method="{method}",le="+Inf"}} {cumulative}'
                )
                lines.append(
                    f'shapley_request_seconds_sum{{method="{method}"}} '
                    f"{self._latency_sum[method]:.6f}"
                )
                lines.append(f'shapley_request_seconds_count{{method="{method}"}} {cumulative}')
            lines += [
                "# HELP shapley_rows_explained_total Rows explained.",
                "# TYPE shapley_rows_explained_total counter",
                f"shapley_rows_explained_total {self._rows_explained}",
            ]
        values = self.store_values()
        for name, (kind, text) in STORE_METRICS.items():
            lines += [
                f"# HELP shapley_{name} {text}",
                f"# TYPE shapley_{name} {kind}",
                f"shapley_{name} {values.get(name, 0)}",
            ]
        return "\n".join(lines) + "\n"


def serve_metrics(metrics: Metrics, address: str) -> ThreadingHTTPServer:
    """Start ``/metrics`` on ``host:port`` in a daemon thread; returns the bound server."""
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
