#!/usr/bin/env bash
# Area change from two existing inventories (no imagery): the Kongsfjorden outlines of the
# Norwegian Polar Institute shipped in ../shared/data/svalbard (one file, a `year` column).
set -euo pipefail
DATA=${1:-../shared/data/svalbard/svalbard.gpkg}
OUT=${OUT:-svalbard-change}
glacimap change --outlines-from "$DATA" --outlines-to "$DATA" --id-column name \
  --from 1936 --to 1990 --out "$OUT/1936_1990" --overwrite
glacimap change --outlines-from "$DATA" --outlines-to "$DATA" --id-column name \
  --from 1990 --to 2007 --out "$OUT/1990_2007" --overwrite
