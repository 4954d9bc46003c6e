#!/usr/bin/env bash
# Issue 11's scale figures in one command: runs the benchmarks that measure
# them (as root: the lab and the dataplane need it) and ends with their
# `scale:` lines merged into one, so runs can be compared:
#   scale: apply_p50_ms=… apply_p99_ms=… fips10k_ms=… floor10k_ms=…
#          next_vs_first=… idle10k_ms=… idle10k_writes=… ct_remove1k_ms=…
#          controller_change_ms=… agent_rss_mb=… (and the benchmarks' other fields)
# Each benchmark's full report is kept in $BENCH_OUT (default a temporary
# directory, printed). The benchmarks' own variables (BENCH_RUNS, BENCH_REPS,
# BENCH_FIPS, BENCH_NODES, ...) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-$(mktemp -d /tmp/kube-dvr-bench-scale.XXXXXX)}
mkdir -p "$out"
echo "bench-scale: reports in $out" >&2
for b in scale dataplane controller_scale agent_memory; do
    echo "bench-scale: cargo bench --bench $b" >&2
    cargo bench --bench "$b" >"$out/$b.txt" 2>"$out/$b.err" || {
        echo "bench-scale: $b failed (see $out/$b.err)" >&2
        exit 1
    }
    grep '^scale: ' "$out/$b.txt" | tail -n 1 || echo "bench-scale: $b printed no scale: line" >&2
done
# One line, in the issue's order, then whatever else the benchmarks report.
cat "$out"/{scale,dataplane,controller_scale,agent_memory}.txt | grep '^scale: ' |
    sed 's/^scale: //' | tr ' ' '\n' | grep '=' | awk -F= '
    BEGIN { n = split("apply_p50_ms apply_p99_ms fips10k_ms floor10k_ms next_vs_first idle10k_ms idle10k_writes ct_remove1k_ms controller_change_ms agent_rss_mb", order, " ") }
    !($1 in v) { v[$1] = $2; keys[++k] = $1 }
    END {
        line = "scale:"
        for (i = 1; i <= n; i++) { line = line " " order[i] "=" (order[i] in v ? v[order[i]] : "-"); seen[order[i]] = 1 }
        for (i = 1; i <= k; i++) if (!(keys[i] in seen)) line = line " " keys[i] "=" v[keys[i]]
        print line
    }'
