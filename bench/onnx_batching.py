"""Usage: python bench/onnx_batching.py MODEL.onnx FOLDER_OF_PNG   (pin it: taskset -c 0)

How much of latin-print's ONNX time is batch-1 overhead: 256 prose-clean crops read one by one
(as equal-width batching does with varied widths) vs the same crops padded right to their
batch's widest and read 64 at a time (readings not compared: a cost bound only). One thread."""

import statistics
import sys
import time
from pathlib import Path

from crnn_core.data import to_array_batch
from crnn_core.onnx_runner import load_onnx_model


model, runner = load_onnx_model(sys.argv[1], threads=1)
pre = model.preprocess
paths = sorted(Path(sys.argv[2]).glob("*.png"))[:256]
arrays = [pre.load(p) for p in paths]


def single():
    for a in arrays:
        runner.run(to_array_batch([a])[0])


order = sorted(range(len(arrays)), key=lambda i: arrays[i].shape[1])


def padded():  # sorted by width first, as a bucketing reader would
    for i in range(0, len(arrays), 64):
        runner.run(to_array_batch([arrays[j] for j in order[i:i + 64]])[0])


print("array", arrays[0].shape, arrays[0].dtype)
for name, f in (("one by one", single), ("64 padded", padded)):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    print(f"{name}: median {statistics.median(times):.3f} s for {len(arrays)} lines = {len(arrays)/statistics.median(times):.1f} lines/s", flush=True)
