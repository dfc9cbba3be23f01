#!/usr/bin/env python3
"""The change writer of `bench/run --cdc`: commits --rate changes/s to --table for --seconds.

    cdc_writer.py --dsn DSN --table T --rate N --seconds S [--single-fraction F] [--batch B] [--markers]

Changes are mixed: 50% inserts, 35% updates, 15% deletes of live rows. A --single-fraction share of
the changes (default 10%) is committed as single-row transactions, the rest in transactions of
--batch changes (default 100: one INSERT ... SELECT FROM unnest, one UPDATE ... WHERE id = ANY, one
DELETE ... WHERE id = ANY). Pacing: every 10 ms the writer catches up with rate x elapsed; when it
cannot keep up the achieved rate says so. The live ids are read from the table at start (the
harness runs one writer per step on the same table).

With --markers, each single-row INSERT prints `M <id> <unix µs after COMMIT returned>` on stdout
as it happens (the harness polls the index for them: commit -> searchable); those rows are
never updated or deleted afterwards. The last stdout line
is a JSON summary.
"""
import argparse
import json
import random
import sys
import time

import psycopg

INSERT_SHARE, UPDATE_SHARE = 0.50, 0.35  # the rest are deletes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--single-fraction", type=float, default=0.10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--markers", action="store_true")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--part", default="0/1",
                    help="k/K: touch only ids with id %% K == k (K writers in parallel never collide)")
    a = ap.parse_args()
    k, parts = (int(x) for x in a.part.split("/"))
    rnd = random.Random(a.seed + int(a.rate) + 7919 * k)
    t = a.table
    conn = psycopg.connect(a.dsn, autocommit=True)
    live = [r[0] for r in conn.execute(f"SELECT id FROM {t} WHERE id % {parts} = {k}")]
    top = conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0] + 1
    next_id = top + (k - top) % parts
    counts = {"inserts": 0, "updates": 0, "deletes": 0, "transactions": 0, "single_row_transactions": 0}
    note = "x" * 80

    def pick_kind():
        r = rnd.random()
        return "i" if r < INSERT_SHARE or len(live) < 100 else ("u" if r < INSERT_SHARE + UPDATE_SHARE else "d")

    def take_live():
        i = rnd.randrange(len(live))
        live[i], live[-1] = live[-1], live[i]
        return live.pop()

    def single():
        nonlocal next_id
        k = pick_kind()
        if k == "i":
            i = next_id
            next_id += parts
            conn.execute(f"INSERT INTO {t} (id, sku, qty, price, note) VALUES (%s, %s, 0, 9.99, %s)",
                         (i, f"SKU-{i}", note))
            counts["inserts"] += 1
            if a.markers:
                # A marker is never updated or deleted afterwards: it must become searchable.
                print(f"M {i} {time.time_ns() // 1000}", flush=True)
            else:
                live.append(i)
        elif k == "u":
            conn.execute(f"UPDATE {t} SET qty = qty + 1, price = price + 0.01 WHERE id = %s",
                         (live[rnd.randrange(len(live))],))
            counts["updates"] += 1
        else:
            conn.execute(f"DELETE FROM {t} WHERE id = %s", (take_live(),))
            counts["deletes"] += 1
        counts["transactions"] += 1
        counts["single_row_transactions"] += 1
        return 1

    def batched():
        nonlocal next_id
        ni = int(a.batch * INSERT_SHARE)
        nu = int(a.batch * UPDATE_SHARE)
        nd = a.batch - ni - nu
        if len(live) < nu + nd + 100:
            ni, nu, nd = a.batch, 0, 0
        ins = list(range(next_id, next_id + ni * parts, parts))
        next_id += ni * parts
        upd = rnd.sample(live, nu) if nu else []
        dele = [take_live() for _ in range(nd)]
        upd = [u for u in upd if u not in set(dele)]
        with conn.transaction():
            if ins:
                conn.execute(f"INSERT INTO {t} (id, sku, qty, price, note) "
                             "SELECT g, 'SKU-' || g, 0, 9.99, %s FROM unnest(%s::bigint[]) g", (note, ins))
            if upd:
                conn.execute(f"UPDATE {t} SET qty = qty + 1, price = price + 0.01 WHERE id = ANY(%s)", (upd,))
            if dele:
                conn.execute(f"DELETE FROM {t} WHERE id = ANY(%s)", (dele,))
        live.extend(ins)
        counts["inserts"] += len(ins)
        counts["updates"] += len(upd)
        counts["deletes"] += len(dele)
        counts["transactions"] += 1
        return len(ins) + len(upd) + len(dele)

    done = single_done = 0
    max_behind = 0.0
    t0 = time.monotonic()
    start_us = time.time_ns() // 1000
    while True:
        el = time.monotonic() - t0
        if el >= a.seconds:
            break
        due = int(a.rate * el)
        if due <= done:
            time.sleep(0.01)
            continue
        max_behind = max(max_behind, (due - done) / a.rate)
        while done < due and time.monotonic() - t0 < a.seconds:
            if single_done < a.single_fraction * (done + 1):
                n = single()
                single_done += n
            else:
                n = batched()
            done += n
    wall = time.monotonic() - t0
    end_us = time.time_ns() // 1000
    changes = counts["inserts"] + counts["updates"] + counts["deletes"]
    print(json.dumps({"rate": a.rate, "seconds": a.seconds, "wall_s": round(wall, 3), "changes": changes,
                      "achieved_per_s": round(changes / wall, 1), "max_behind_s": round(max_behind, 3),
                      "start_us": start_us, "end_us": end_us, "single_row_changes": single_done, **counts}),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
