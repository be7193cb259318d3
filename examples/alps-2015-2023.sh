#!/usr/bin/env bash
# Glacier area change in the Ötztal Alps, 2015 -> 2023, from Earth Search (needs internet).
#
# Inputs: an RGI 6.0 / 7.0 extract of the region (any OGR format), e.g. rgi_oetztal.shp.
# Rough expectation for ~20 glaciers on a 4-core laptop (an estimate scaled from the synthetic
# benchmarks, not measured against Earth Search, which this project's machines cannot reach):
# fetch a few minutes and on the order of 100 MB per year (only windows over the glaciers are
# read), predict a few minutes per year on the CPU, outlines and change in seconds.
set -euo pipefail
WORK=${WORK:-alps-work}
INVENTORY=${1:?usage: $0 INVENTORY.shp [MODEL.safetensors]}
MODEL=${2:-band-ratio}   # a model trained on real imagery; band-ratio needs no weights

# 2015: --sensor auto picks Landsat 8 (Sentinel-2 coverage starts mid-2015).
glacimap fetch --inventory "$INVENTORY" --year 2015 --work "$WORK"
glacimap fetch --inventory "$INVENTORY" --year 2023 --work "$WORK"
glacimap predict --work "$WORK" --year 2015 --model "$MODEL"
glacimap predict --work "$WORK" --year 2023 --model "$MODEL"
glacimap outlines --work "$WORK" --year 2015
glacimap outlines --work "$WORK" --year 2023
glacimap change --work "$WORK" --from 2015 --to 2023
echo "report: $WORK/change/2015_2023/report.html"
