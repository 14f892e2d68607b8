#!/usr/bin/env python3
"""Which B-trees the commits in a SQLite store's WAL wrote, in pages per commit.

    python3 bench/wal-pages.py DATA_DIR

Reads DATA_DIR/kinde-meter.db-wal (the frames since the WAL last restarted:
after a `bench --mode single` run against `serve --data-dir DATA_DIR`, the
last few dozen commits), groups its valid frames into commits (a frame with a
database size is a commit's last) and names the B-tree and page type each
frame's page belongs to with SQLite's `dbstat` table, read from a copy of the
database and WAL (the store itself is not opened). Every frame is a page
written twice (WAL, then checkpoint) and synced once: this is the write
amplification per commit that bench/HISTORY.md accounts ("Record order",
"The single record's write").
Stop the server first (kill -9 keeps the WAL as it was; a clean shutdown
checkpoints it away).
"""

import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def frames(wal):
    """(page number, database size or 0) of each frame of the current WAL."""
    header = struct.unpack(">8I", wal[:32])
    page_size, salts = header[2], header[4:6]
    found, at = [], 32
    while at + 24 + page_size <= len(wal):
        page, db_size, salt1, salt2 = struct.unpack(">4I", wal[at : at + 16])
        if (salt1, salt2) != salts:
            break  # frames of an earlier WAL generation
        found.append((page, db_size))
        at += 24 + page_size
    return page_size, found


def main(data_dir):
    db = os.path.join(data_dir, "kinde-meter.db")
    with open(db + "-wal", "rb") as f:
        page_size, found = frames(f.read())
    commits, current = [], []
    for page, db_size in found:
        current.append(page)
        if db_size:
            commits.append(current)
            current = []
    if not commits:
        sys.exit("no committed frames in the WAL")
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "copy.db")
        shutil.copy(db, copy)
        shutil.copy(db + "-wal", copy + "-wal")
        owner = {
            page: (name, kind)
            for name, page, kind in sqlite3.connect(copy).execute(
                "SELECT name, pageno, pagetype FROM dbstat"
            )
        }
    per_tree = collections.Counter(
        owner.get(page, ("(freed)", "-")) for commit in commits for page in commit
    )
    n = len(commits)
    total = sum(map(len, commits))
    print(
        f"{n} commits, {total / n:.1f} frames ({page_size}-byte pages) per commit"
    )
    print("| B-tree | page type | pages per commit |")
    print("|---|---|---|")
    for (name, kind), count in per_tree.most_common():
        print(f"| {name} | {kind} | {count / n:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
