#!/usr/bin/env bash
# A Landsat-era pair: 1998 (Landsat 5) -> 2023 (Sentinel-2), from Earth Search (needs internet).
#
# Landsat Collection 2 Level 2 on Earth Search is in a requester-pays bucket: set AWS
# credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) before running; glacimap adds
# AWS_REQUEST_PAYER=requester itself. Data volume: on the order of 100 MB per year for ~20
# glaciers (an estimate, not measured: this project's machines have no internet).
set -euo pipefail
WORK=${WORK:-landsat-work}
INVENTORY=${1:?usage: $0 INVENTORY.shp [MODEL.safetensors]}
MODEL=${2:-band-ratio}

glacimap fetch --inventory "$INVENTORY" --year 1998 --sensor landsat --work "$WORK" --max-cloud 0.2
glacimap fetch --inventory "$INVENTORY" --year 2023 --work "$WORK"
for year in 1998 2023; do
  glacimap predict --work "$WORK" --year "$year" --model "$MODEL"
  glacimap outlines --work "$WORK" --year "$year"
done
glacimap change --work "$WORK" --from 1998 --to 2023
