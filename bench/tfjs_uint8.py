"""tensorflowjs_converter's uint8 weight quantization in numpy, the baseline of `npm run bench:big`.

Reads model.json and every shard of its weight groups, quantizes each float32 weight the way the converter
does (tensorflowjs/quantization.py: per-tensor min/max widened to hold 0, zero point rounded, values clipped
to the nudged range, codes = round((w - min) / scale)), and writes model.json with one shard.

usage: python3 tfjs_uint8.py <modelDir> <outDir>
"""
import json
import os
import sys

import numpy as np


def quantize(data):
    lo, hi = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zero_point = round(-lo / scale)
    nudged_min = -zero_point * scale
    nudged_max = nudged_min + 255 * scale
    codes = np.round((np.clip(data, nudged_min, nudged_max) - nudged_min) / scale).astype(np.uint8)
    return codes, {"dtype": "uint8", "min": nudged_min, "scale": scale, "original_dtype": "float32"}


def main(model_dir, out_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        model = json.load(f)
    entries, chunks = [], []
    for group in model["weightsManifest"]:
        data = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            count = int(np.prod(entry["shape"], dtype=np.int64))
            values = np.frombuffer(data, dtype=np.float32, count=count, offset=offset)
            offset += 4 * count
            codes, quantization = quantize(values)
            entries.append({**entry, "quantization": quantization})
            chunks.append(codes.tobytes())
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "group1-shard1of1.bin"), "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    model["weightsManifest"] = [{"paths": ["group1-shard1of1.bin"], "weights": entries}]
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(model, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
