#!/usr/bin/env bash
# The benchmark runs the README quotes, in one go (about 20 minutes on a 2-core machine).
# Results land in benchmarks/results/: a .txt table, a .json and, where drawn, a .png each.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${STORE_PG_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}
OUT=benchmarks/results
TMP=$(mktemp -d)
mkdir -p "$OUT"
bench() { name=$1; shift; .venv/bin/python -m benchmarks "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"; }
LOAD=(-W 32 -C 64 -S 2 -K 3 --double-submit 0.2 --interrupt 0.1)

# 1. the main comparison, every system, PostgreSQL
bench postgres --db "$PG" "${LOAD[@]}" --duration 20 --chart "$OUT/postgres.png"
# 2. one hot conversation, every turn double-submitted
bench hot --db "$PG" --systems store,store-end-apart,raw,raw-locked -W 32 -C 1 -S 2 -K 3 \
    --double-submit 1.0 --interrupt 0 --duration 20
# 3. SQLite, a file database in WAL mode
bench sqlite --db "sqlite:///$TMP/bench.db" --systems store,store-end-apart,raw,raw-locked,naive \
    "${LOAD[@]}" --duration 20
# 4. cost growth: step-commit latency with 1,000 and with 1,000,000 messages stored
bench preload-1k --db "$PG" --systems store,raw "${LOAD[@]}" --duration 10 --preload 1000
bench preload-1m --db "$PG" --systems store,raw "${LOAD[@]}" --duration 10 --preload 1000000
# 5. cost growth with the turns of one conversation (both databases)
for db in "$PG" "sqlite:///$TMP/growth.db"; do
    .venv/bin/python -m benchmarks.turn_growth --db "$db"
done | tee "$OUT/turn-growth.txt"
# 6. steps/s against the number of workers
bench sweep --db "$PG" "${LOAD[@]}" --duration 10 --sweep --chart "$OUT/sweep.png"
rm -rf "$TMP"
