"""The peer: kraken's `ketos train` on sample_data/codes under a wall-clock budget.

    python bench/kraken_peer.py [--budget 5] [--venv /work/venv-kraken] [--threads 2]

kraken lives in its own venv (`python3 -m venv V && V/bin/pip install kraken`). Its `path`
format wants each image beside a `.gt.txt` with the text, so the train and val images are linked
into a temp folder with sidecars, and passed as list files (-t / -e: our split, not kraken's
random one). kraken's own defaults are kept (architecture, batch size, no augmentation) except
the thread count and the report frequency: `-F 0.25` validates every quarter epoch, because
with its defaults (batch 1, a 1.6 GFLOP network at height 120) one epoch of the 2,400 lines can
outlast the whole budget on 2 cores, and kraken then reports no CER at all. It has no time budget option, so it is stopped (SIGINT, then SIGKILL) once
the budget is spent; its per-epoch validation character accuracy is read from its log
(kraken's `val_accuracy` is 1 - CER, so CER = 1 - accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODES = REPO / "sample_data" / "codes"


def make_sidecars(split: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    listing = []
    for line in (CODES / split / "labels.tsv").read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        name, text = line.split("\t")
        image = folder / name
        os.symlink(CODES / split / name, image)
        image.with_suffix(".gt.txt").write_text(text, encoding="utf-8")
        listing.append(str(image))
    out = folder.parent / f"{split}.txt"
    out.write_text("\n".join(listing) + "\n")
    return out


# `ketos -v` logs "validation run: total chars N errors E accuracy A" after each epoch; the
# checkpoints it writes are also named checkpoint_EE-<val_metric>.ckpt (val_metric = accuracy).
ACC = re.compile(r"validation run: total chars \d+ errors \d+ accuracy ([0-9.]+)")
KRAKEN_FREQ = 0.25  # validation runs per epoch = 1 / this
CKPT = re.compile(r"checkpoint_\d+-([0-9.]+)\.ckpt$")


def accuracies(log: Path, model_dir: Path) -> list[float]:
    found = [float(x) for x in ACC.findall(log.read_text(errors="replace"))]
    if not found and model_dir.is_dir():
        files = sorted(model_dir.glob("checkpoint_*.ckpt"), key=lambda p: p.stat().st_mtime)
        found = [float(m.group(1)) for p in files if (m := CKPT.search(p.name))]
    return found


def run_kraken(budget_min: float, venv: str, threads: int) -> dict:
    ketos = Path(venv) / "bin" / "ketos"
    if not ketos.exists():
        return {"error": f"{ketos} not found (python3 -m venv {venv} && {venv}/bin/pip install kraken)"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_list = make_sidecars("train", tmp / "train")
        val_list = make_sidecars("val", tmp / "val")
        log = tmp / "ketos.log"
        cmd = [str(ketos), "-v", "--threads", str(threads), "--workers", "1", "-d", "cpu", "train", "-f", "path",
               "-t", str(train_list), "-e", str(val_list), "-o", str(tmp / "model"), "-q", "fixed",
               "-N", "1000", "-F", str(KRAKEN_FREQ)]
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
            events = []  # (seconds since start, val accuracy)
            deadline = start + budget_min * 60
            while proc.poll() is None and time.perf_counter() < deadline:
                time.sleep(1.0)
                found = accuracies(log, tmp / "model")
                while len(events) < len(found):
                    events.append((time.perf_counter() - start, float(found[len(events)])))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        text = log.read_text(errors="replace")
        tail = text[-3000:]
    if not events:
        last = [x for x in tail.splitlines() if x.strip()][-5:]
        return {"error": "no validation result within the budget; log tail: " + " | ".join(last)[-600:],
                "seconds": time.perf_counter() - start}
    cers = [1 - a for _, a in events]
    best_i = min(range(len(cers)), key=cers.__getitem__)
    return {"epochs": len(events), "cers": cers, "seconds_per_epoch": [t for t, _ in events],
            "best_cer": cers[best_i], "best_seconds": events[best_i][0], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=5.0, help="minutes")
    parser.add_argument("--venv", default=os.environ.get("KRAKEN_VENV", "/work/venv-kraken"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    print(json.dumps(run_kraken(args.budget, args.venv, args.threads)))


if __name__ == "__main__":
    main()
