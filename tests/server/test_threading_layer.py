"""A server where numba runs its kernels on the ``workqueue`` threading layer (numba's fallback
where the system has no libgomp, as in a slim Debian image): concurrent calls take turns on the
kernels instead of aborting the process."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from shapley_client import ShapleyClient

from tests.server.conftest import make_task
from tests.server.test_failover import _free_port, _wait_serving

pytestmark = pytest.mark.slow  # a server process of its own
SHAPLEY_SVC = str(Path(sys.executable).parent / "shapley-svc")


def test_concurrent_calls_on_the_workqueue_layer_take_turns(tmp_path):
    port = _free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [SHAPLEY_SVC, "serve", "--address", f"127.0.0.1:{port}", "--metrics-address", ""],
        env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    try:
        _wait_serving(port, time.monotonic() + 240)
        X, p = make_task(n=300, d=5, seed=4)
        with ShapleyClient(f"127.0.0.1:{port}", timeout=120, max_attempts=1) as client:
            context = client.create_context(X, p)
            alone = client.explain(context, X[:5], p[:5]).values
            model = lambda rows: rows[:, 0] + rows[:, 1] * rows[:, 2]  # noqa: E731
            refined_alone = client.explain(context, X[:3], p[:3], model=model, budget=20).values
            answers, failures = [], []

            def call(i: int) -> None:
                try:
                    if i % 3 == 2:
                        got = client.explain(context, X[:3], p[:3], model=model, budget=20)
                        answers.append(("refined", got.values))
                    else:
                        answers.append(("explained", client.explain(context, X[:5], p[:5]).values))
                except Exception as error:  # every failure is reported below
                    failures.append(error)

            threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert server.poll() is None, log.read_text()[-2000:]
        assert not failures, failures
        assert len(answers) == 12
        for kind, values in answers:
            expected = refined_alone if kind == "refined" else alone
            assert np.array_equal(values, expected), kind
        assert "threading layer is workqueue" in log.read_text()
    finally:
        server.terminate()
        server.wait(60)
