#!/usr/bin/env python3
"""The hand-written Python loader bench/run compares Ferry with.

What a team would write without Ferry: psycopg 3 with a server-side (named) cursor, one dict per
row, and the official Elasticsearch client's ``helpers.streaming_bulk`` (500 documents or 5 MB per
request, whichever comes first, the helper's defaults but for the byte limit). If the
``elasticsearch`` package is not importable, a stand-in with the same chunking and
``json.dumps`` + urllib3 is used (the record says which).

    python3 bench/loader.py --dsn DSN --url http://127.0.0.1:PORT --index NAME --table items

Prints one JSON line: rows, wall_s (connect to last answer), client.
"""
import argparse
import datetime
import decimal
import json
import sys
import time

import psycopg

CHUNK_DOCS = 500
CHUNK_BYTES = 5 * 1024 * 1024


def rows(dsn, table, index):
    with psycopg.connect(dsn) as conn:
        with conn.cursor(name="bench_loader") as cur:
            cur.itersize = 2000
            cur.execute(f"SELECT * FROM {table}")
            cols = None
            for row in cur:
                if cols is None:
                    cols = [d.name for d in cur.description]
                doc = dict(zip(cols, row))
                # Same _id scheme as Elastic's PostgreSQL connector (and Ferry).
                yield {"_index": index, "_id": f"bench_public_{table}_{doc['id']}_", "_source": doc}


def default(o):
    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    raise TypeError(type(o))


def fallback_bulk(url, actions):
    """helpers.streaming_bulk's chunking with urllib3, for when elasticsearch-py is missing."""
    import urllib3

    http = urllib3.PoolManager()
    buf, n, size = [], 0, 0

    def send():
        body = b"".join(buf)
        r = http.request("POST", url + "/_bulk", body=body, headers={"Content-Type": "application/x-ndjson"})
        resp = json.loads(r.data)
        if r.status != 200 or resp.get("errors"):
            raise SystemExit(f"bulk failed: {r.status} {r.data[:300]!r}")
        return len(resp["items"])

    done = 0
    for a in actions:
        line = (json.dumps({"index": {"_index": a["_index"], "_id": a["_id"]}}) + "\n"
                + json.dumps(a["_source"], default=default, separators=(",", ":")) + "\n").encode()
        if buf and (n >= CHUNK_DOCS or size + len(line) > CHUNK_BYTES):
            done += send()
            buf, n, size = [], 0, 0
        buf.append(line)
        n += 1
        size += len(line)
    if buf:
        done += send()
    return done


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--table", default="items")
    a = p.parse_args()
    t0 = time.monotonic()
    try:
        from elasticsearch import Elasticsearch, helpers
    except ImportError:
        Elasticsearch = None
    if Elasticsearch is not None:
        es = Elasticsearch(a.url, request_timeout=120)
        ok = 0
        for success, info in helpers.streaming_bulk(
            es, rows(a.dsn, a.table, a.index), chunk_size=CHUNK_DOCS, max_chunk_bytes=CHUNK_BYTES,
            raise_on_error=True, raise_on_exception=True,
        ):
            if not success:
                raise SystemExit(f"item failed: {info}")
            ok += 1
        client = "elasticsearch-py %s helpers.streaming_bulk" % ".".join(map(str, __import__("elasticsearch").__versionstr__.split(".")[:3]))
    else:
        ok = fallback_bulk(a.url.rstrip("/"), rows(a.dsn, a.table, a.index))
        client = "urllib3 stand-in for streaming_bulk"
    wall = time.monotonic() - t0
    print(json.dumps({"rows": ok, "wall_s": wall, "client": client}))


if __name__ == "__main__":
    sys.exit(main())
