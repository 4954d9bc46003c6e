#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, written from the Rust types by
# `kube-dvr crds`) into the chart's crds/ directory, removing chart copies
# whose source is gone. tests/chart.rs fails when the two differ.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/crds
dst=$repo/charts/kube-dvr/crds

shopt -s nullglob
files=("$src"/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
    echo "gen-chart-crds: no $src/*.yaml; generate them first (kube-dvr crds)" >&2
    exit 1
fi
mkdir -p "$dst"
for f in "$dst"/*.yaml; do
    [ -e "$src/$(basename "$f")" ] || rm -f "$f"
done
for f in "${files[@]}"; do
    cp "$f" "$dst/"
done
echo "gen-chart-crds: ${#files[@]} file(s) -> charts/kube-dvr/crds/" >&2
