"""The SQLite example agent with one protocol rule broken, to prove the conformance suite
catches it (tests/tests/conformance.rs). MISBEHAVE selects the rule:

- no_heartbeat: never sends Heartbeat;
- no_window: ignores the flow-control window;
- ignore_cancel: keeps syncing after CancelJob;
- from_scratch: ignores resume_checkpoint;
- ignore_filtering: never answers ValidateFiltering (drafts stay `edited`).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "sdk" / "python" / "examples"))

import sqlite_agent  # noqa: E402
from ferry_sdk import runtime, source  # noqa: E402

mode = os.environ["MISBEHAVE"]
if mode == "no_heartbeat":
    runtime._Session._heartbeats = lambda self: None  # type: ignore[method-assign]
elif mode == "no_window":
    init = source.DocumentSender.__init__

    def wide_open(self, *a, **k):  # type: ignore[no-untyped-def]
        init(self, *a, **k)
        self.window_size = 1_000_000

    source.DocumentSender.__init__ = wide_open  # type: ignore[method-assign]
elif mode == "ignore_cancel":
    source.Job.canceled = property(lambda self: False)  # type: ignore[assignment]
elif mode == "from_scratch":
    sync = sqlite_agent.SQLiteSource.sync

    def restart(self, job, out):  # type: ignore[no-untyped-def]
        job.resume_checkpoint = None
        return sync(self, job, out)

    sqlite_agent.SQLiteSource.sync = restart  # type: ignore[method-assign]
elif mode == "ignore_filtering":
    runtime._Session._validate_filtering = lambda self, v: None  # type: ignore[method-assign]
else:
    raise SystemExit(f"unknown MISBEHAVE={mode}")
runtime.run_agent(sqlite_agent.SQLiteSource())
