"""The Python client's side of agreement.test.js: calibrate() on the cases given, as outcomes.

Reads JSON from stdin: {"target": "host:port", "contexts": {key: {"rows": base64 of float64
little-endian, "shape": [n, d], "predictions": base64, "predictionShape": [...]}}, "cases":
[{"name", "context", "maxMessageBytes", "budget", "refit", "randomState"}]}. Writes JSON to
stdout: {name: outcome}, an outcome being what calibrate() decided as the caller sees it:
{"contextId", "refitted", "calibrationRows", "scored"} or {"refused": {"code", "field",
"numbers"}, "scored"}. "scored": the rows the model was called on (0: refused before it ran).

The model is agreement.test.js's, in the same floating-point operations in the same order, so
that both clients send the same outputs bit for bit (and the server derives the same id).
"""

import base64
import json
import re
import sys

import numpy as np
from shapley_client import ShapleyClient, ShapleyError


def model(rows: np.ndarray) -> np.ndarray:
    """sum_j (j + 1) x_j + 0.25 x_0 x_1, left to right, as agreement.test.js computes it."""
    out = np.zeros(rows.shape[0], dtype=np.float64)
    for j in range(rows.shape[1]):
        out = out + float(j + 1) * rows[:, j]
    return out + 0.25 * (rows[:, 0] * rows[:, 1 % rows.shape[1]])


def array(data: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f8").reshape(shape)


def numbers(message: str) -> list[int]:
    """The sizes a refusal names: the message limit, or the rows in all and the row limit."""
    found = re.search(r"do not fit in one (\d+)-byte message", message)
    if found:
        return [int(found.group(1))]
    found = re.search(r"(\d+) in all; the limit is (\d+)", message)
    return [int(found.group(1)), int(found.group(2))] if found else []


def outcome(client: ShapleyClient, spec: dict, case: dict) -> dict:
    scored = []

    def scoring(rows: np.ndarray) -> np.ndarray:
        scored.append(rows.shape[0])
        return model(rows)

    try:
        context = client.create_context(
            array(spec["rows"], spec["shape"]), array(spec["predictions"], spec["predictionShape"])
        )
        calibrated = client.calibrate(
            context,
            scoring,
            budget=case.get("budget"),
            random_state=case.get("randomState"),
            refit=case.get("refit"),
        )
    except ShapleyError as error:
        refused = {"code": error.code.name, "field": error.field, "numbers": numbers(str(error))}
        return {"refused": refused, "scored": sum(scored)}
    except ValueError as error:
        # The refit past one message is a plain ValueError here, refused naming refit in Node.
        field = "refit" if "do not fit in one" in str(error) else None
        refused = {"code": "INVALID_ARGUMENT", "field": field, "numbers": numbers(str(error))}
        return {"refused": refused, "scored": sum(scored)}
    return {
        "contextId": calibrated.context_id,
        "refitted": calibrated.calibration_refitted,
        "calibrationRows": calibrated.calibration_rows,
        "scored": sum(scored),
    }


def main() -> None:
    job = json.load(sys.stdin)
    clients: dict[int, ShapleyClient] = {}
    results = {}
    try:
        for case in job["cases"]:
            size = case["maxMessageBytes"]
            if size not in clients:
                clients[size] = ShapleyClient(job["target"], timeout=120, max_message_bytes=size)
            results[case["name"]] = outcome(clients[size], job["contexts"][case["context"]], case)
    finally:
        for client in clients.values():
            client.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
