"""The committed gRPC stubs are what the .proto files generate today."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stubs_ask_for_the_grpcio_floor_both_packages_require():
    # The generated code asks for the grpcio-tools version that ran: a patch release of it
    # (1.85.4) made stubs that refused grpcio 1.85.1-1.85.3 and failed the freshness check.
    import re

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from generate_protos import GRPC_FLOOR
    finally:
        sys.path.pop(0)
    floors = {
        re.search(r'"grpcio>=([0-9.]+)"', (path / "pyproject.toml").read_text()).group(1)
        for path in (ROOT, ROOT / "clients" / "python")
    }
    assert floors == {GRPC_FLOOR}
    for stub in (
        ROOT / "shapley_svc" / "_proto" / "shapley_pb2_grpc.py",
        ROOT / "clients" / "python" / "shapley_client" / "_proto" / "shapley_pb2_grpc.py",
    ):
        assert f"GRPC_GENERATED_VERSION = '{GRPC_FLOOR}'" in stub.read_text()
