#!/usr/bin/env bash
# Explain one row with grpcurl and plain JSON numbers, against a running server
# (SHAPLEY_TARGET, default 127.0.0.1:50051). The context is sent inline: 4 rows, 2 features.
set -euo pipefail
grpcurl -plaintext -d @ "${SHAPLEY_TARGET:-127.0.0.1:50051}" shapley.v1.Shapley/Explain <<'JSON'
{
  "context": {
    "rows": {"shape": [4, 2], "values": [0, 0, 1, 0, 0, 1, 1, 1]},
    "predictions": {"shape": [4], "values": [0.1, 0.4, 0.3, 0.9]},
    "featureNames": ["age", "income"]
  },
  "rows": {"shape": [1, 2], "values": [1, 1]},
  "predictions": {"shape": [1], "values": [0.9]},
  "outputValues": true
}
JSON
