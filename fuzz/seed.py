#!/usr/bin/env python3
"""Writes the seed corpora of moec's fuzz targets (fuzz/corpus/<target>/)
from the repository's own inputs: every example and test .moe with its
imports inlined (the front_end target reads one file), schedules and
placements emitted by `moec` for the small test model, the bundled counts
trimmed to one domain, and a small routing trace. Run from the repository
root after `cargo build --release`: python3 fuzz/seed.py"""

import glob, json, os, re, subprocess

ROOT = os.getcwd()
MOEC = os.path.join(ROOT, "target/release/moec")
CORPUS = os.path.join(ROOT, "fuzz/corpus")


def inline(path, seen):
    """The file's text with each `import "x"` replaced by x's text, once."""
    path = os.path.normpath(path)
    if path in seen or not os.path.isfile(path):
        return ""
    seen.add(path)
    out = []
    for line in open(path, encoding="utf-8").read().splitlines():
        m = re.match(r'\s*import\s+"([^"]+)"', line)
        if m and os.path.isfile(os.path.join(os.path.dirname(path), m.group(1))):
            out.append(inline(os.path.join(os.path.dirname(path), m.group(1)), seen))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(CORPUS, target, name), mode) as f:
        f.write(data)


def moec(*args):
    done = subprocess.run([MOEC, *args], capture_output=True)
    return done.stdout if done.returncode == 0 else None


# Seeds a fuzzer can execute many times a second: these two compile for 3
# to 15 s (whole-wafer migration passes, 256 dies) and would time out.
SLOW = {"examples/deepseek-v3-wafer-drift.moe", "examples/deepseek-v3-4wafers.moe"}

for path in sorted(glob.glob("examples/*.moe") + glob.glob("tests/*/*.moe")):
    if path in SLOW:
        continue
    # File references other than imports (counts, traces, placements) stay
    # as they are: in memory they are missing, which is a path worth fuzzing too.
    put("front_end", path.replace("/", "_"), inline(path, set()))

tiny = "tests/placement_files/tiny.moe"
for plan in ["eplb", "contiguous"]:
    put("schedule", f"tiny-{plan}.json", moec("compile", tiny, "--plan", plan, "--emit", "schedule"))
    for kind, fmt in enumerate(["sglang", "vllm-ascend", "trtllm", "moec"], start=1):
        text = moec("compile", tiny, "--plan", plan, "--emit", "placement", "--format", fmt)
        if text is None:  # EPLB's duplicates do not export yet (issue 19)
            continue
        put("data_file", f"{fmt}-{plan}", bytes([kind]) + text)
        put("data_file", f"auto-{fmt}-{plan}", bytes([0]) + text)
for plan in ["eplb", "tp"]:
    put("schedule", f"faults-mesh-{plan}.json", moec("compile", "tests/faults/mesh.moe", "--plan", plan, "--emit", "schedule"))

counts = json.load(open("examples/traces/olmoe-routing-analysis/expert_counts.json"))
cross = json.load(open("examples/traces/olmoe-routing-analysis/crosslayer_counts.json"))
put("data_file", "counts", bytes([5]) + json.dumps({
    "meta": {"models": {"mistral": counts["meta"]["models"]["mistral"]},
             "layers_recorded": counts["meta"]["layers_recorded"]},
    "counts": {"mistral": {"arxiv": {"topk": counts["counts"]["mistral"]["arxiv"]["topk"]}}},
}).encode())
put("data_file", "crosslayer", bytes([6]) + json.dumps({
    "meta": {"models": {"mistral": cross["meta"]["models"]["mistral"]},
             "layers_recorded": cross["meta"]["layers_recorded"]},
    "crosslayer": {"mistral": {"arxiv": {"topk_rank_aligned": cross["crosslayer"]["mistral"]["arxiv"]["topk_rank_aligned"]}}},
}).encode())
put("data_file", "trace", bytes([7]) + json.dumps({
    "format": "moec-routing-trace", "version": 1, "experts": 8, "top_k": 2, "layers": [1, 2, 3],
    "steps": [{"tokens": 2, "experts": [[0, 1, 2, 3], [4, 5, 6, 7], [7, 0, 1, 6]]},
              {"tokens": 1, "experts": [[5, 4], [3, 2], [1, 0]]}],
}).encode())
