"""Turns one run of benchmarks/gpu/run.sh (Google Benchmark JSON from
optdsl-gpu-bench, JSON lines from the peers: torch_adamw_fused.py and
bnb_8bit.py) into the markdown section for docs/benchmarks.md, with the date
and device of the run. A peer row is the peer of the benchmark with its
rule, layout and shape (torch's rows: adamw, f32).
    python3 report.py BENCH.json PEERS.jsonl DEVICE"""
import datetime
import json
import sys


def main(bench_path, torch_path, device):
    bench = json.load(open(bench_path))
    torch_rows = {}
    try:
        for line in open(torch_path):
            if line.strip().startswith("{"):
                row = json.loads(line)
                key = (row.get("rule", "adamw"), row.get("layout", "f32"), row["shape"])
                torch_rows[key] = row
    except FileNotFoundError:
        pass
    date = datetime.date.today().isoformat()
    out = [f"### {date}, {device}", "",
           "`benchmarks/gpu/run.sh`: optdsl-gpu-bench (one step + synchronize per iteration, host clock), "
           "same-traffic = a kernel moving exactly the layout's streams (benchmarks/gpu/SameTrafficKernel.h), "
           "copy = cuMemcpyDtoD moving as many bytes, both in the same process; peers = "
           "torch_adamw_fused.py (f32) and bnb_8bit.py (state=q8), timed the same way. Targets: "
           "roofline >= 0.90, speed-up over torch fused AdamW >= 1.3.", "",
           "| benchmark | params | image | state B/param | step B/param | ms/step | GB/s | same-traffic GB/s "
           "| roofline | copy GB/s | copy roofline | peer ms/step | speed-up |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in bench["benchmarks"]:
        # "step/adamw/state=q8/gpt2s/min_time:2.000/manual_time" → step/adamw/state=q8/gpt2s
        name = "/".join(b["name"].split("/")[:4])
        layout = name.split("/")[2]
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        ms = b["real_time"] * scale
        rule, shape = name.split("/")[1], name.split("/")[3]
        peer = torch_rows.get((rule, layout, shape))
        peer_ms = f"{peer['ms_per_step']:.3f}" if peer else "—"
        speedup = f"{peer['ms_per_step'] / ms:.2f}×" if peer else "—"
        out.append(f"| {name} | {b['params_M']:.1f}M | {b.get('label', '')} | "
                   f"{b['state_bytes_per_param']:.3f} | {b['bytes_per_param']:.2f} | {ms:.3f} | {b['GBps']:.0f} | "
                   f"{b['same_traffic_GBps']:.0f} | {b['roofline']:.3f} | "
                   f"{b['copy_GBps']:.0f} | {b['copy_roofline']:.3f} | {peer_ms} | {speedup} |")
    peers = sorted({row["peer"] for row in torch_rows.values()})
    if peers:
        out += ["", "Peers: " + "; ".join(peers) + "."]
    print("\n".join(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
