"""Does an exported ONNX file read the sample validation set exactly like `crnn predict`?

    python bench/onnx_parity.py [--model codes-small] [--data sample_data/codes/val]

Exports the model with `crnn export`, runs the .onnx in onnxruntime one image at a time
(each at its own width, using only the metadata stored in the file), and compares the texts
with `crnn predict --format tsv` on the same images. Prints the count that agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from crnn_core.config import ModelConfig
from crnn_core.data import Preprocess, discover, to_tensor_batch
from crnn_core.decode import greedy

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codes-small")
    parser.add_argument("--data", type=Path, default=REPO / "sample_data" / "codes" / "val")
    args = parser.parse_args()
    crnn = [sys.executable, "-m", "crnn_core.cli.app"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        subprocess.run([*crnn, "export", args.model, "--format", "onnx", "--out", str(out)], check=True)
        paths = [s.path for s in discover(args.data).samples]
        predicted = subprocess.run([*crnn, "predict", "-", "--model", args.model, "--format", "tsv"],
                                   input="\n".join(map(str, paths)) + "\n", capture_output=True, text=True, check=True)
        expected = [line.split("\t")[1] for line in predicted.stdout.splitlines()]
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        alphabet = meta["crnn.alphabet"]
        preprocess = Preprocess.from_dict(json.loads(meta["crnn.preprocess"]))
        config = ModelConfig.from_dict(json.loads(meta["crnn.config"]))
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        texts = []
        for path in paths:
            images, widths = to_tensor_batch([preprocess.load(path)])
            log_probs = session.run(None, {"images": images.numpy()})[0]
            (decoded,) = greedy(np.asarray(log_probs), [config.time_steps(widths[0])])
            texts.append("".join(alphabet[i - 1] for i in decoded.ids))
    same = sum(a == b for a, b in zip(texts, expected))
    print(f"{same}/{len(paths)} images: onnxruntime (batch 1) text == crnn predict text")
    for path, a, b in zip(paths, texts, expected):
        if a != b:
            print(f"  differs: {path}: onnx {a!r} vs predict {b!r}")
    sys.exit(0 if same == len(paths) else 1)


if __name__ == "__main__":
    main()
