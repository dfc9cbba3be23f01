"""The SQLite example agent's source, without a control plane."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from ferry_sdk import ConfigurationError, Job, JobKind, SourceUnreachable

spec = importlib.util.spec_from_file_location(
    "sqlite_agent", Path(__file__).resolve().parent.parent / "examples" / "sqlite_agent.py")
assert spec and spec.loader
sqlite_agent = importlib.util.module_from_spec(spec)
sys.modules["sqlite_agent"] = sqlite_agent
spec.loader.exec_module(sqlite_agent)


class Out:
    def __init__(self) -> None:
        self.docs: List[Tuple[str, Dict[str, Any]]] = []
        self.checkpoints: List[bytes] = []
        self.metadata: Dict[str, Any] = {}

    def send(self, doc_id: str, doc: Dict[str, Any]) -> None:
        self.docs.append((doc_id, doc))

    def checkpoint(self, c: bytes) -> None:
        self.checkpoints.append(c)

    def set_metadata(self, k: str, v: Any) -> None:
        self.metadata[k] = v


def db(tmp_path: Path) -> str:
    path = str(tmp_path / "shop.sqlite")
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE item (sku TEXT, shop INTEGER, price REAL, img BLOB, PRIMARY KEY (shop, sku))")
        c.executemany("INSERT INTO item VALUES (?, ?, ?, ?)",
                      [("b", 1, 2.5, b"\x00\x01"), ("a", 1, 1.0, None), ("a", 2, 3.0, None)])
    return path


def job(config: Dict[str, Any], checkpoint: bytes = b"") -> Job:
    return Job(id="j", connector_id="c", kind=JobKind.FULL, index_name="i", config=config,
               resume_checkpoint=checkpoint or None)


def test_rows_become_documents_with_stable_ids_in_key_order(tmp_path: Path) -> None:
    cfg = {"path": db(tmp_path), "table": "item"}
    out = Out()
    sqlite_agent.SQLiteSource().sync(job(cfg), out)  # type: ignore[arg-type]
    assert [d for d, _ in out.docs] == ["item_1_a", "item_1_b", "item_2_a"]
    assert out.docs[1][1] == {"sku": "b", "shop": 1, "price": 2.5, "img": "AAE=", "id": "item_1_b", "table": "item"}
    assert json.loads(out.checkpoints[-1]) == [2, "a"]
    assert out.metadata == {"rows_read": 3}
    resumed = Out()
    sqlite_agent.SQLiteSource().sync(job(cfg, out.checkpoints[0]), resumed)  # type: ignore[arg-type]
    assert [d for d, _ in resumed.docs] == ["item_1_b", "item_2_a"]


def test_validation_says_what_is_wrong(tmp_path: Path) -> None:
    s = sqlite_agent.SQLiteSource()
    path = db(tmp_path)
    s.validate({"path": path, "table": "item"})
    with pytest.raises(SourceUnreachable, match="does not exist"):
        s.validate({"path": str(tmp_path / "nope.sqlite"), "table": "item"})
    with pytest.raises(ConfigurationError, match="'nope' does not exist"):
        s.validate({"path": path, "table": "nope"})


def test_the_example_stays_short() -> None:
    lines = (Path(sqlite_agent.__file__).read_text()).count("\n")
    assert lines < 150, lines
