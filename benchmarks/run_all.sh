#!/usr/bin/env bash
# The benchmark runs the README quotes, in one go (about 45 minutes on a 2-core machine).
# Results land in benchmarks/results/: a .txt table, a .json and, where drawn, a .png each.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${STORE_PG_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}
OUT=benchmarks/results
TMP=$(mktemp -d)
mkdir -p "$OUT"
bench() { name=$1; shift; .venv/bin/python -m benchmarks "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"; }
LOAD=(-W 32 -C 64 -S 2 -K 3 --double-submit 0.2 --interrupt 0.1)

ratios() { .venv/bin/python -m benchmarks.summary --ratios "$@"; }
ALL=store,store-end-apart,raw,raw-locked,naive,agents-sdk
ALL_REVERSED=agents-sdk,naive,raw-locked,raw,store-end-apart,store

# 1. the main comparison, every system, PostgreSQL: three runs, the second in reverse order
#    (the machine's other load moves one run's ratios; the median of the three is quoted)
bench postgres --db "$PG" --systems "$ALL" "${LOAD[@]}" --duration 20 --chart "$OUT/postgres.png"
bench postgres-reversed --db "$PG" --systems "$ALL_REVERSED" "${LOAD[@]}" --duration 20
bench postgres-again --db "$PG" --systems "$ALL" "${LOAD[@]}" --duration 20
ratios "$OUT"/postgres{,-reversed,-again}.json | tee "$OUT/postgres-ratios.txt"
#    the same load on turns that never meet (1,024 conversations, no double submits): what
#    the writes cost, without the wait behind a running turn or a double submit's 2nd copy
SPREAD=(-W 32 -C 1024 -S 2 -K 3 --double-submit 0 --interrupt 0.1 --duration 20)
bench spread --db "$PG" --systems store,raw "${SPREAD[@]}"
bench spread-reversed --db "$PG" --systems raw,store "${SPREAD[@]}"
ratios "$OUT"/spread{,-reversed}.json | tee "$OUT/spread-ratios.txt"
# 2. one hot conversation, every turn double-submitted: two runs, in both orders
HOT=(-W 32 -C 1 -S 2 -K 3 --double-submit 1.0 --interrupt 0 --duration 20)
bench hot --db "$PG" --systems store,store-end-apart,raw,raw-locked "${HOT[@]}"
bench hot-reversed --db "$PG" --systems raw-locked,raw,store-end-apart,store "${HOT[@]}"
ratios --base raw-locked "$OUT"/hot{,-reversed}.json | tee "$OUT/hot-ratios.txt"
# 3. SQLite, a file database in WAL mode: three runs, the second in reverse order
SQ=(--db "sqlite:///$TMP/bench.db" "${LOAD[@]}" --duration 20)
bench sqlite --systems store,store-end-apart,raw,raw-locked,naive "${SQ[@]}"
bench sqlite-reversed --systems naive,raw-locked,raw,store-end-apart,store "${SQ[@]}"
bench sqlite-again --systems store,store-end-apart,raw,raw-locked,naive "${SQ[@]}"
ratios "$OUT"/sqlite{,-reversed,-again}.json | tee "$OUT/sqlite-ratios.txt"
# 4. cost growth: step-commit latency with 1,000 and with 1,000,000 messages stored
bench preload-1k --db "$PG" --systems store,raw "${LOAD[@]}" --duration 10 --preload 1000
bench preload-1m --db "$PG" --systems store,raw "${LOAD[@]}" --duration 10 --preload 1000000
# 5. cost growth with the turns of one conversation (both databases)
for db in "$PG" "sqlite:///$TMP/growth.db"; do
    .venv/bin/python -m benchmarks.profile turn-growth --db "$db"
done | tee "$OUT/turn-growth.txt"
# 6. steps/s against the number of workers
bench sweep --db "$PG" "${LOAD[@]}" --duration 10 --sweep --chart "$OUT/sweep.png"
# 7. backend CPU per step, and what each check of the schema costs of it
.venv/bin/python -m benchmarks.profile db-cost --db "$PG" | tee "$OUT/db-cost.txt"
# 8. what one statement's set-up costs on turnstore's tables, against the rows it writes
.venv/bin/python -m benchmarks.profile statement-cost --db "$PG" | tee "$OUT/statement-cost.txt"
rm -rf "$TMP"
