#!/usr/bin/env bash
# Split glacier complexes along ice divides (Kienholz et al. 2013) with a DEM.
# complexes.gpkg: outlines of glacier complexes (e.g. dissolved RGI outlines).
set -euo pipefail
glacimap split --outlines "${1:?complexes.gpkg}" --dem "${2:?dem.tif}" --out "${3:-glaciers.gpkg}" --overwrite
