"""Conformance seed adapter for the SQLite example (see sdk/PROTOCOL.md, "Conformance").

    ferry-conformance --agent-cmd 'python3 sdk/python/examples/sqlite_agent.py' \
                      --seed-cmd 'python3 sdk/python/examples/sqlite_seed.py'

Reads FERRY_CONFORMANCE_ROWS and FERRY_CONFORMANCE_DIR, writes a SQLite file there with
exactly that many rows of about 1 KiB, and prints the connector configuration that reads
it and one that points at a missing file.
"""

import json
import os
import sqlite3

rows = int(os.environ["FERRY_CONFORMANCE_ROWS"])
path = os.path.join(os.environ["FERRY_CONFORMANCE_DIR"], "conformance.sqlite")
if os.path.exists(path):
    os.remove(path)
with sqlite3.connect(path) as conn:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                     ((i, f"item {i}", f"{i:08d}" * 128) for i in range(1, rows + 1)))
print(json.dumps({
    "service_type": "sqlite",
    "configuration": {"path": path, "table": "items"},
    "broken_configuration": {"path": path + ".missing", "table": "items"},
}))
