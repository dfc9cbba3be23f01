"""The checked-in stubs match proto/ (regenerate with `python sdk/python/generate.py`)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

GENERATE = Path(__file__).resolve().parent.parent / "generate.py"


def test_stubs_match_the_protos() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail("grpcio-tools is needed for the drift check: pip install './sdk/python[dev]'")
    import grpc_tools  # noqa: F401
    from importlib.metadata import version

    assert version("grpcio-tools") == "1.85.1", "the stubs are generated with grpcio-tools==1.85.1 (see pyproject)"
    r = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubs_import_under_the_package() -> None:
    from ferry_sdk.proto.ferry.v1 import agent_pb2, agent_pb2_grpc

    assert agent_pb2.DESCRIPTOR.package == "ferry.v1"
    assert hasattr(agent_pb2_grpc, "AgentServiceStub")
