"""Parameters, FLOPs and forward time of every model preset on one tile.

    python benchmarks/bench_models.py                 # 384 x 384, CPU, optical + DEM
    python benchmarks/bench_models.py --sar --repeats 5 --device cuda --json out.json

Writes a table to stdout and JSON to benchmarks/out/bench_models.json (or ``--json``). FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2
FLOPs; convolutions, matrix products and attention; element-wise operations are not counted).
Forward time is the median of ``--repeats`` timed passes after one warm-up pass, batch 1,
evaluation mode, no gradients. GFLOPs are also split by the model's top-level parts (GlaViTU:
fusion, transformer, U-Net).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from glacimap.models import count_parameters, create_model, model_names, resolve_device


def tile_inputs(size: int, sar: bool, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sources = {"optical": 6, "dem": 2, **({"sar": 2} if sar else {})}
    return {k: torch.rand(1, c, size, size, generator=generator).to(device) for k, c in sources.items()}


def count_flops(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one forward pass and FLOPs per top-level submodule."""
    with torch.no_grad(), FlopCounterMode(display=False, depth=2) as counter:
        model(inputs)
    root = type(model).__name__
    counts = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    parts: dict[str, int] = {}
    for name, flops in counts.items():
        path = name.split(".")
        if path[0] != root or len(path) < 2:
            continue
        if len(path) == 2:
            parts[path[1]] = parts.get(path[1], 0) + flops
        elif len(path) == 3 and f"{root}.{path[1]}" not in counts:  # children of a ModuleList
            parts[path[1]] = parts.get(path[1], 0) + flops
    return int(counter.get_total_flops()), parts


def time_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int, device: torch.device) -> float:
    times = []
    with torch.no_grad():
        for index in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index:  # the first pass warms up allocators and kernels
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=model_names())
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--sar", action="store_true", help="add a two-band SAR source")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "bench_models.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for name in args.models:
        sources = {"optical": 6, "dem": 2, **({"sar": 2} if args.sar else {})}
        if name == "band-ratio":
            model = create_model(name)
            inputs = {"optical": tile_inputs(args.size, False, device)["optical"][:, :3]}
        else:
            torch.manual_seed(0)
            model = create_model(name, sources=sources)
            inputs = tile_inputs(args.size, args.sar, device)
        model = model.to(device).eval()
        flops, parts = count_flops(model, inputs)
        row = {
            "model": name,
            "parameters": count_parameters(model),
            "gflops": flops / 1e9,
            "gflops_by_part": {k: v / 1e9 for k, v in parts.items() if v},
            "forward_s": time_forward(model, inputs, args.repeats, device),
        }
        rows.append(row)
        split = ", ".join(f"{k} {v:.1f}" for k, v in row["gflops_by_part"].items())
        print(
            f"{name:15s} {row['parameters']:>12,d} params {row['gflops']:9.2f} GFLOPs "
            f"{row['forward_s']:8.4f} s   [{split}]",
            flush=True,
        )
    meta = {
        "size": args.size,
        "sar": args.sar,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(meta))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
