"""A gRPC server with no project code: one unary method that returns its request bytes.

The service benchmark calls it next to the real server to measure the round-trip floor of grpcio
on the machine (a synchronous server with its thread pool, as ``shapley-svc serve`` uses): the
part of a call's latency that no server built on grpcio can remove.

    python -m benchmarks._echo_server     # prints its port, serves until stdin closes
"""

import concurrent.futures
import sys

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


def main() -> int:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # the parent closes stdin to stop it
    server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
