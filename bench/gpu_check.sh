#!/usr/bin/env bash
# The GPU checks for the distributed/GPU path, as one prepared script for a lent GPU machine
# (the `device` tool runs it in the repository root; results go to $OUT, or ./bench-out/gpu).
#   training samples/s for crnn-small and crnn-paper, fp32 and bf16 autocast, on cuda;
#   inference lines/s at batch 1 and 256.
# It needs torch with CUDA on that machine; it installs the package without touching torch.
set -euo pipefail
out=${OUT:-bench-out/gpu}
mkdir -p "$out"
python3 -m venv --system-site-packages "$out/venv"
. "$out/venv/bin/activate"
pip install -q --no-deps -e . && pip install -q typer rich pillow pyyaml rapidfuzz numpy
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python - <<'PY' 2>&1 | tee "$out/results.txt"
import json, statistics, time, torch
from crnn_core.config import load_model_config
from crnn_core.model import CRNN
assert torch.cuda.is_available(), "no CUDA"
dev = torch.device("cuda")
print("torch", torch.__version__, torch.cuda.get_device_name(0))
for name in ("crnn-small", "crnn-paper"):
    config = load_model_config(name)
    for precision in ("fp32", "bf16"):
        model = CRNN(config, 37).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        ctc = torch.nn.CTCLoss(zero_infinity=True)
        x = torch.randn(64, 1, 32, 160, device=dev)
        targets = torch.randint(1, 37, (64 * 8,), device=dev)
        rates = []
        for rep in range(4):
            torch.cuda.synchronize(); start = time.perf_counter()
            for _ in range(20):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    lp = model(x)
                loss = ctc(lp, targets, torch.full((64,), lp.shape[0]), torch.full((64,), 8))
                opt.zero_grad(); loss.backward(); opt.step()
            torch.cuda.synchronize(); rates.append(20 * 64 / (time.perf_counter() - start))
        print(json.dumps({"model": name, "precision": precision, "train_samples_per_s": statistics.median(rates[1:])}))
    model = CRNN(config, 37).to(dev).eval()
    for batch in (1, 256):
        x = torch.randn(batch, 1, 32, 160, device=dev)
        with torch.inference_mode():
            for _ in range(3): model(x)
            torch.cuda.synchronize(); start = time.perf_counter(); n = 0
            while time.perf_counter() - start < 3:
                model(x); n += batch
            torch.cuda.synchronize()
        print(json.dumps({"model": name, "inference_batch": batch, "lines_per_s": n / (time.perf_counter() - start)}))
PY
