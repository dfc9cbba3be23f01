"""A Ferry agent for SQLite: syncs one table into the connector's Elasticsearch index.

    pip install ./sdk/python
    FERRY_CONTROL_PLANE_URL=https://cp:50051 FERRY_TLS_CA=ca.pem FERRY_TLS_CERT=agent.pem \
    FERRY_TLS_KEY=agent-key.pem FERRY_CONNECTOR_ID=my-sqlite python sdk/python/examples/sqlite_agent.py

Then configure the connector (service_type `sqlite`) with `path` and `table` and start a
full sync. Every row becomes one document with a stable id, `<table>_<primary key>`;
rows are read in primary-key order, and the checkpoint is the last key sent, so a
resumed job continues where the acknowledged data ends. Rows that vanished from the
table disappear from the index after the next full sync (the control plane deletes
what a full sync did not write), so the agent simply sends every row.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from contextlib import closing
from typing import Any, Dict, List

from ferry_sdk import (
    ConfigField,
    ConfigurationError,
    ConfigValues,
    DocumentSender,
    Job,
    JobKind,
    Source,
    SourceUnreachable,
    run_agent,
)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_value(v: Any) -> Any:
    return base64.b64encode(v).decode() if isinstance(v, bytes) else v


class SQLiteSource(Source):
    service_type = "sqlite"

    def configuration_schema(self) -> Dict[str, ConfigField]:
        return {
            "path": ConfigField.text("Database file", 1, tooltip="Path of the SQLite file on the agent's host"),
            "table": ConfigField.text("Table", 2),
            "fetch_size": ConfigField.integer("Rows fetched at a time", 3, required=False, default_value=500,
                                              advanced=True),
        }

    def connect(self, config: ConfigValues) -> sqlite3.Connection:
        path = str(config.get("path") or "")
        if not os.path.isfile(path):
            raise SourceUnreachable(f"SQLite file {path!r} does not exist on the agent's host")
        try:  # read-only: the agent never writes to the source
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as e:
            raise SourceUnreachable(f"cannot read SQLite file {path!r}: {e}") from e

    def primary_key(self, conn: sqlite3.Connection, table: str) -> List[str]:
        cols = conn.execute("SELECT name, pk FROM pragma_table_info(?)", (table,)).fetchall()
        if not cols:
            raise ConfigurationError(f"table {table!r} does not exist")
        return [name for name, pk in sorted(cols, key=lambda c: c[1]) if pk > 0] or ["rowid"]

    def validate(self, config: ConfigValues) -> None:
        with closing(self.connect(config)) as conn:
            self.primary_key(conn, str(config.get("table") or ""))

    def sync(self, job: Job, out: DocumentSender) -> None:
        if job.kind is not JobKind.FULL:
            raise ConfigurationError("the SQLite agent runs full syncs only")
        table = str(job.config.get("table") or "")
        with closing(self.connect(job.config)) as conn:
            key = self.primary_key(conn, table)
            keys = ", ".join(quote(k) for k in key)
            after = json.loads(job.resume_checkpoint) if job.resume_checkpoint else None
            where = f"WHERE ({keys}) > ({', '.join('?' * len(key))})" if after else ""
            # One SELECT is one read transaction: a consistent snapshot of the table.
            cur = conn.execute(f"SELECT {keys}, * FROM {quote(table)} {where} ORDER BY {keys}", after or [])
            cur.arraysize = int(job.config.get("fetch_size") or 500)
            names = [d[0] for d in cur.description][len(key):]
            rows = 0
            while batch := cur.fetchmany():
                for row in batch:
                    pk = list(row[: len(key)])
                    doc_id = f"{table}_" + "_".join(str(v) for v in pk)
                    doc = {n: json_value(v) for n, v in zip(names, row[len(key):])}
                    out.send(doc_id, {**doc, "id": doc_id, "table": table})  # blocks while the window is full
                    out.checkpoint(json.dumps(pk).encode())
                    rows += 1
            out.set_metadata("rows_read", rows)


if __name__ == "__main__":
    run_agent(SQLiteSource())
