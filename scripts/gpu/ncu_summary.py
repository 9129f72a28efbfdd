#!/usr/bin/env python3
"""A short table of what Nsight Compute measured for each kernel (bench_gpu.sh, EMBER_GPU_NCU=1).

    python3 scripts/gpu/ncu_summary.py ncu.csv

ncu.csv is `ncu --csv --page raw` output (one row per profiled launch, one column per metric,
the first row the metrics' names and the second their units; ncu's own `==PROF==` lines mixed
in are skipped). Per launch: the kernel, its time, the speed-of-light percentages (SM, L2,
DRAM), the tensor pipes' busy percentages, achieved occupancy, registers, and the five largest
warp stall reasons (cycles per issued instruction). A metric the report lacks prints as "—";
a file this cannot read says so and exits 0: the CSV itself still comes back under $OUT.
"""

import csv
import re
import sys


def number(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def main():
    path = sys.argv[1]
    lines = [line for line in open(path, errors="replace") if line.startswith('"')]
    rows = list(csv.reader(lines))
    header_at = next((i for i, row in enumerate(rows) if "Kernel Name" in row), None)
    if header_at is None or len(rows) < header_at + 3:
        print(f"ncu_summary: no report rows in {path}")
        return
    header, units = rows[header_at], rows[header_at + 1]
    col = {name: i for i, name in enumerate(header)}

    def value(row, name):
        i = col.get(name)
        return number(row[i]) if i is not None and i < len(row) else None

    def unit(name):
        i = col.get(name)
        return units[i] if i is not None and i < len(units) else ""

    def pct(row, name):
        v = value(row, name)
        return "—" if v is None else f"{v:.0f}"

    tensor = [name for name in header if re.match(r"sm__pipe_tensor.*pct_of_peak_sustained_active$", name)]
    stalls = [(m.group(1), name) for name in header
              if (m := re.match(r"smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$", name))]
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit("gpu__time_duration.sum"))
    print("| ID | kernel | µs | SM % | L2 % | DRAM % | tensor pipes % | occupancy % | regs | top stalls (cycles / issued instruction) |")
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---|")
    for row in rows[header_at + 2:]:
        if len(row) != len(header):
            continue
        name = row[col["Kernel Name"]]
        name = name if len(name) <= 48 else name[:45] + "…"
        t = value(row, "gpu__time_duration.sum")
        micros = f"{t * scale:.1f}" if t is not None and scale else "—"
        pipes = ", ".join(f"{n.split('__')[1].replace('pipe_', '').split('_cycles')[0]} {value(row, n):.0f}"
                          for n in tensor if value(row, n) is not None) or "—"
        top = sorted(((value(row, n) or 0.0, reason) for reason, n in stalls), reverse=True)[:5]
        top_text = ", ".join(f"{reason} {v:.1f}" for v, reason in top if v > 0) or "—"
        regs = value(row, "launch__registers_per_thread")
        launch = row[col["ID"]] if "ID" in col else "?"
        print(f"| {launch} | {name} | {micros} | {pct(row, 'sm__throughput.avg.pct_of_peak_sustained_elapsed')} | "
              f"{pct(row, 'lts__throughput.avg.pct_of_peak_sustained_elapsed')} | "
              f"{pct(row, 'dram__throughput.avg.pct_of_peak_sustained_elapsed')} | {pipes} | "
              f"{pct(row, 'sm__warps_active.avg.pct_of_peak_sustained_active')} | "
              f"{'—' if regs is None else f'{regs:.0f}'} | {top_text} |")


if __name__ == "__main__":
    main()
