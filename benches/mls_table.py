#!/usr/bin/env python3
"""Medians and ratios of the `mls` criterion benches as a Markdown table."""
import json, os, sys, glob
root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
res = {}
for bj in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
    b = json.load(open(bj))
    est = json.load(open(os.path.join(os.path.dirname(bj), "estimates.json")))
    res[(b["group_id"], b["function_id"], b["value_str"])] = est["median"]["point_estimate"]
order = ["key_package", "create_add/1", "create_add/16", "create_add/128", "self_update/sparse",
         "self_update/populated", "process/sparse", "process/populated", "join_129",
         "app_encrypt_1KiB", "app_decrypt_1KiB"]
suites = ["0x0001", "0x004D", "0x004F", "0x0052"]
provs = ["ours", "ours-mem", "ours-cold", "rustcrypto", "libcrux"]
def fmt(ns):
    if ns is None: return "-"
    if ns >= 1e6: return f"{ns/1e6:.2f} ms"
    return f"{ns/1e3:.1f} us"
print("| operation | suite | " + " | ".join(provs) + " | ours / best upstream | ours-mem / best | target |")
print("|---|---|" + "---|" * len(provs) + "---|---|---|")
for g in order:
    for s in suites:
        row = {p: res.get((g, p, s)) for p in provs}
        if all(v is None for v in row.values()): continue
        up = [row[p] for p in ("rustcrypto", "libcrux") if row[p] is not None]
        best = min(up) if up else None
        tgt = 1.0 if s == "0x0001" else 0.5
        def r(v):
            return f"{v/best:.2f}x" if (v is not None and best) else "-"
        ours = row["ours"]
        if g.startswith("self_update") and row["ours-cold"] is not None:
            ratio = f"{r(ours)} (cold {r(row['ours-cold'])})"
            worst = max(ours, row["ours-cold"])
        else:
            ratio, worst = r(ours), ours
        met = "-" if (best is None or ours is None) else ("met" if worst / best <= tgt else "missed")
        print(f"| {g} | {s} | " + " | ".join(fmt(row[p]) for p in provs) + f" | {ratio} | {r(row['ours-mem'])} | <= {tgt}x {met} |")
