"""The benchmark suite: one command, one table. See docs/performance.md for what each row means.

    python bench/suite.py [--quick] [--threads N] [--skip kraken,tesseract,...] [--json out.json]

Sections (names for --skip / --only):
  machine    cores, CPU flags, load average, torch
  ceiling    fp32 and bf16 matmul GFLOP/s on --threads threads (median of several)
  flops      forward FLOPs per 32x100 sample, counted analytically (bench/flops.py)
  train      bare training-step rate on ready tensors vs end-to-end `crnn train` (crnn-tiny, crnn-fast, crnn-small),
             with each as a fraction of the fp32 ceiling; the naive baseline (bench/naive_train.py)
  predict    `crnn predict` end to end over >= 2000 paths; model alone at batch 1 and 64 for eager,
             ONNX Runtime and int8, with accuracy on sample_data/codes/val
  tesseract  Tesseract 5 CLI, --psm 7, OMP_THREAD_LIMIT=1, over a list file; lines/s and accuracy
  memory     peak RSS of `crnn predict -` over many paths (and over a tenth as many: bounded, not growing)
  startup    `crnn --help` and `crnn predict one.png` wall times
  accuracy   time to 95% validation sequence accuracy, a default `crnn train` from a cold start,
             for --budget minutes (also our CER at the budget, for the kraken comparison)
  kraken     `ketos train` (bench/kraken_peer.py, its own venv) with the same budget; its CER vs ours

Every ratio is taken from figures measured in this same run. Rates on a loaded machine are not the
machine's speed: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
CODES = REPO / "sample_data" / "codes"
SECTIONS = ("machine", "ceiling", "flops", "train", "predict", "tesseract", "memory", "startup", "accuracy", "kraken")

ROWS: list[tuple[str, str, str]] = []  # (section, what, value)
RESULTS: dict = {}


def row(section: str, what: str, value: str) -> None:
    value = " ".join(value.replace("|", "/").split())  # one Markdown table cell
    ROWS.append((section, what, value))
    print(f"  [{section}] {what}: {value}", file=sys.stderr, flush=True)


def med(values) -> float:
    return statistics.median(values)


def runs_str(values, fmt="{:.1f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- machine
def machine(args) -> None:
    flags = set()
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
              if f in flags]
    RESULTS["machine"] = {"cpu": model, "cores": os.cpu_count(), "flags": wanted, "torch": torch.__version__,
                          "python": platform.python_version(), "load_at_start": load_avg(),
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    row("machine", "CPU", f"{model}, {os.cpu_count()} cores, flags {' '.join(wanted)}")
    row("machine", "torch / threads", f"{torch.__version__}, {args.threads} threads")
    row("machine", "load average at start (1/5/15 min)", load_avg())


# ---------------------------------------------------------------- ceiling
def ceiling(args) -> None:
    n = 1024 if args.quick else 2048
    reps = 3 if args.quick else 7
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        a @ b  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        rates = [2 * n ** 3 / t / 1e9 for t in times]
        out[name] = med(rates)
        row("ceiling", f"{name} matmul {n}x{n}, GFLOP/s (median of {reps})", f"{out[name]:.1f} (runs {runs_str(rates)})")
    RESULTS["ceiling"] = out


# ---------------------------------------------------------------- flops
def flops(args) -> None:
    from flops import model_flops

    RESULTS["flops"] = {}
    for name in ("crnn-tiny", "crnn-fast", "crnn-small", "crnn-paper"):
        c = model_flops(name, 37, 100)
        RESULTS["flops"][name] = c
        row("flops", f"{name} forward MFLOP per 32x100 sample (conv/lstm/linear)",
            f"{c['total'] / 1e6:.1f} ({c['conv'] / 1e6:.1f}/{c['lstm'] / 1e6:.1f}/{c['linear'] / 1e6:.2f}); "
            f"training ~3x = {3 * c['total'] / 1e6:.1f}")


def fraction(model_name: str, rate: float, width: float, factor: int) -> str:
    """rate x FLOPs per sample (at the measured mean width) as a share of the fp32 ceiling."""
    from flops import model_flops

    if "ceiling" not in RESULTS:
        return "n/a (ceiling not measured)"
    per_sample = model_flops(model_name, 37, int(round(width)))["total"] * factor
    gflops = rate * per_sample / 1e9
    return f"{gflops:.2f} GFLOP/s = {100 * gflops / RESULTS['ceiling']['fp32']:.1f}% of fp32 ceiling"


# ---------------------------------------------------------------- train
def bare_rate(model_name: str, steps: int, reps: int, bf16: bool = False) -> tuple[list[float], float]:
    """`crnn train`'s step (forward, CTC, backward, clip, AdamW) on batches already in memory."""
    from crnn_core.alphabet import Alphabet
    from crnn_core.augment import augment_batch
    from crnn_core.config import TrainConfig, load_model_config
    from crnn_core.data import discover, load_all, width_batches
    from crnn_core.model import CRNN
    from crnn_core.modelfile import preprocess_for
    from crnn_core.train import TRAIN_WIDTH_MULTIPLE

    config = load_model_config(model_name)
    tc = TrainConfig()
    dataset = discover(CODES / "train")
    arrays, _ = load_all([s.path for s in dataset.samples], preprocess_for(config), 2)
    alphabet = Alphabet.from_texts(s.text for s in dataset.samples)
    rng = np.random.default_rng(0)
    order = width_batches([a.shape[1] for a in arrays], tc.batch_size, rng)[:steps]
    batches = []
    widths_seen = []
    for idx in order:
        # The shapes `crnn train` steps on: augmented (the stretch widens or narrows each image),
        # padded to the training width multiple. Made once, before the clock starts.
        images, widths = augment_batch([arrays[i] for i in idx], rng, tc.augment, config.max_width,
                                       TRAIN_WIDTH_MULTIPLE)
        widths_seen.append(images.shape[-1])
        ids = [alphabet.encode(dataset.samples[i].text) for i in idx]
        batches.append((images, torch.tensor([config.time_steps(w) for w in widths]),
                        torch.tensor([t for x in ids for t in x]), torch.tensor([len(x) for x in ids])))
    torch.manual_seed(0)
    model = CRNN(config, alphabet.num_classes).train()
    opt = torch.optim.AdamW(model.parameters(), tc.lr, weight_decay=tc.weight_decay)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    rates = []
    for rep in range(reps + 1):  # round 0 builds oneDNN's kernels for each width (as epoch 1 does)
        start, seen = time.perf_counter(), 0
        for images, in_len, flat, tgt_len in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                log_probs = model(images)
            loss = ctc(log_probs, flat, in_len, tgt_len)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            seen += images.shape[0]
        if rep:
            rates.append(seen / (time.perf_counter() - start))
    return rates, float(np.mean(widths_seen))


def e2e_train(model_name: str, epochs: int, threads: int, out: Path, precision: str = "fp32") -> dict:
    cmd = [*CRNN, "train", str(CODES), "--model", model_name, "--epochs", str(epochs), "--patience", "99",
           "--threads", str(threads), "--out", str(out), "--precision", precision]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"crnn train failed: {result.stderr[-1500:]}")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = [h["samples_per_s"] for h in history[1:]] or [history[0]["samples_per_s"]]
    return {"rates_after_first_epoch": later, "median": med(later), "epoch1": history[0]["samples_per_s"],
            "wall": time.perf_counter() - start, "val_accuracy": history[-1]["val_accuracy"]}


def naive(model_name: str, steps: int, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(REPO / "bench" / "naive_train.py"), "--model", model_name, "--steps", str(steps)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"naive baseline failed: {result.stderr[-1500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def train(args) -> None:
    """Bare step and end-to-end rates, measured in alternation (bare, e2e, bare, e2e, ...) so that
    the machine's drift hits both alike; each ratio is of the medians."""
    RESULTS["train"] = {}
    models = ["crnn-tiny", "crnn-fast", "crnn-small"] + (["crnn-paper"] if args.paper else [])
    has_bf16 = "avx512_bf16" in open("/proc/cpuinfo").read()
    rounds = 1 if args.quick else 3
    epochs = 2 if args.quick else 3
    steps = 10 if args.quick else 80
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            with_bf16 = has_bf16 and name in ("crnn-fast", "crnn-small")
            bare, bare_bf, e2e, e2e_bf = [], [], [], []
            for i in range(rounds):
                rates, width = bare_rate(name, steps, 1)
                bare += rates
                e2e.append(e2e_train(name, epochs, args.threads, Path(tmp) / f"{name}-{i}"))
                if with_bf16:
                    bare_bf += bare_rate(name, steps, 1, bf16=True)[0]
                    e2e_bf.append(e2e_train(name, epochs, args.threads, Path(tmp) / f"{name}-bf16-{i}", "bf16"))
            e2e_rates = [e["median"] for e in e2e]
            ratio = med(e2e_rates) / med(bare)
            RESULTS["train"][name] = {"bare": bare, "bare_median": med(bare), "mean_width": width, "e2e": e2e,
                                      "e2e_median": med(e2e_rates), "data_path_ratio": ratio}
            row("train", f"{name} bare step (forward, CTC, backward, clip, AdamW) on ready tensors of the training "
                f"shapes (augmented), fp32, samples/s (batch 16, mean width {width:.0f})",
                f"{med(bare):.1f} (runs {runs_str(bare)}); {fraction(name, med(bare), width, 3)}")
            row("train", f"{name} `crnn train --precision fp32` end to end, samples/s (median of epochs 2+ of each run)",
                f"{med(e2e_rates):.1f} (runs {runs_str(e2e_rates)}; epoch 1: {runs_str([e['epoch1'] for e in e2e])})")
            row("train", f"{name} data-path ratio e2e / bare (target >= 90%)",
                f"{100 * ratio:.1f}% -> {'met' if ratio >= 0.9 else 'NOT met'}")
            if with_bf16:
                e2e_bf_rates = [e["median"] for e in e2e_bf]
                RESULTS["train"][name].update(bare_bf16=bare_bf, e2e_bf16=e2e_bf, e2e_bf16_median=med(e2e_bf_rates))
                row("train", f"{name} bare step with bf16 autocast, samples/s; bf16 / fp32 (target >= 1.7x)",
                    f"{med(bare_bf):.1f} (runs {runs_str(bare_bf)}); {med(bare_bf) / med(bare):.2f}x -> "
                    f"{'met' if med(bare_bf) / med(bare) >= 1.7 else 'NOT met'}")
                row("train", f"{name} `crnn train --precision bf16` end to end, samples/s; bf16 / fp32 end to end; "
                    "data-path ratio in bf16", f"{med(e2e_bf_rates):.1f} (runs {runs_str(e2e_bf_rates)}); "
                    f"{med(e2e_bf_rates) / med(e2e_rates):.2f}x; {100 * med(e2e_bf_rates) / med(bare_bf):.1f}%")
        for name in ["crnn-tiny", "crnn-fast"] + (["crnn-paper"] if args.paper else []):
            results = [naive(name, 10 if args.quick else 30, args.threads if args.threads_given else None)
                       for _ in range(rounds)]
            rates = [r["samples_per_s"] for r in results]
            ours = RESULTS["train"][name]["e2e_median"]
            RESULTS["train"][name]["naive"] = rates
            row("train", f"{name} naive baseline (PIL each step, fixed width {results[0]['width']}, fp32), samples/s",
                f"{med(rates):.1f} (runs {runs_str(rates)})")
            target = " (target >= 3x)" if name in ("crnn-tiny", "crnn-fast") else ""
            verdict = (" -> met" if ours / med(rates) >= 3 else " -> NOT met") if target else ""
            row("train", f"{name} ours e2e (fp32) / naive{target}", f"{ours / med(rates):.2f}x{verdict}")
            if "e2e_bf16_median" in RESULTS["train"][name]:
                row("train", f"{name} ours e2e with the default precision (bf16 here) / naive",
                    f"{RESULTS['train'][name]['e2e_bf16_median'] / med(rates):.2f}x")


# ---------------------------------------------------------------- predict
def val_set() -> tuple[list[str], list[str]]:
    rows = [line.split("\t") for line in (CODES / "val" / "labels.tsv").read_text(encoding="utf-8").splitlines() if line]
    return [str(CODES / "val" / name) for name, _ in rows], [text for _, text in rows]


def timed(cmd, stdin: str | None = None, env=None) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(map(str, cmd))}\n{result.stderr[-1500:]}")
    return elapsed


def predict(args) -> None:
    from crnn_core.metrics import score
    from crnn_core.recognizer import recognize_arrays
    from crnn_core.runners import resolve_runner

    paths, truth = val_set()
    lines = 500 if args.quick else 2000
    many = (paths * (lines // len(paths) + 1))[:lines]
    stdin = "\n".join(many) + "\n"
    out = {}
    for label, extra in (("auto", []), ("torch", ["--backend", "torch"]), ("onnx", ["--backend", "onnx"])):
        cmd = [*CRNN, "predict", "-", "--model", "codes-fast", "--format", "jsonl", *extra]  # the sample codes' model
        timed(cmd, "\n".join(paths[:8]) + "\n")  # makes the ONNX cache, warms the page cache
        times = [timed(cmd, stdin) for _ in range(1 if args.quick else 3)]
        rates = [lines / t for t in times]
        out[f"e2e_{label}"] = rates
        row("predict", f"`crnn predict -` end to end, {lines} paths, codes-fast, --backend {label}"
            f"{' (the default)' if label == 'auto' else ''}, lines/s",
            f"{med(rates):.1f} (runs {runs_str(rates)})")
    target = med(out["e2e_auto"])
    row("predict", "end-to-end lines/s target >= 500", f"{target:.1f} -> {'met' if target >= 500 else 'NOT met'}")

    # The model alone: images already decoded and preprocessed in memory.
    variants = [("codes-fast", "eager fp32", "torch", None), ("codes-fast", "ONNX Runtime", "onnx", None),
                ("codes-fast", "int8 dynamic (torch)", "torch", "int8"),
                ("codes-fast", "int8 dynamic (ONNX Runtime)", "onnx", "int8"),
                ("codes-small", "eager fp32", "torch", None)]
    base = resolve_runner("codes-fast", "torch").loaded
    arrays = [base.preprocess.load(p) for p in paths]  # both models read 32 px gray the same way
    for model_name, label, backend, quantize in variants:
        resolved = resolve_runner(model_name, backend, "cpu", quantize)
        model, loaded = resolved.runner, resolved.loaded
        recognize_arrays(model, arrays[:64], loaded.alphabet.decode, 64)  # warm-up
        res = {}
        for batch in (1, 64):
            subset = arrays if batch == 64 else arrays[: (50 if args.quick else 200)]
            times = []
            for _ in range(1 if args.quick else 3):
                start = time.perf_counter()
                texts = [o.text for o in recognize_arrays(model, subset, loaded.alphabet.decode, batch)]
                times.append(len(subset) / (time.perf_counter() - start))
            res[batch] = times
            if batch == 64:
                s = score(truth, texts)
                res["accuracy"], res["cer"] = s.accuracy, s.cer
        out[f"{model_name} {label}"] = res
        if label == "eager fp32":
            eager_texts = texts
        same = sum(a == b for a, b in zip(eager_texts, texts))
        res["same_as_eager"] = same
        row("predict", f"model alone, {model_name}, {label}: lines/s at batch 1, batch 64; val accuracy, CER "
            f"({len(paths)} images)",
            f"{med(res[1]):.1f}, {med(res[64]):.1f}; {100 * res['accuracy']:.2f}%, {100 * res['cer']:.2f}% "
            f"({same}/{len(paths)} texts as eager)")
    RESULTS["predict"] = out


# ---------------------------------------------------------------- tesseract
def tesseract(args) -> None:
    from crnn_core.metrics import score

    paths, truth = val_set()
    if args.quick:
        paths, truth = paths[:100], truth[:100]
    try:
        version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except FileNotFoundError:
        row("tesseract", "Tesseract", "not installed (apt-get install -y tesseract-ocr)")
        return
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "list.txt"
        listing.write_text("\n".join(paths) + "\n")
        times, texts = [], []
        for _ in range(1 if args.quick else 3):
            start = time.perf_counter()
            result = subprocess.run(["tesseract", str(listing), "stdout", "--psm", "7"], capture_output=True,
                                    text=True, env=env)
            times.append(time.perf_counter() - start)
            # one page per image, pages separated by form feeds
            texts = [page.strip() for page in result.stdout.split("\f")][: len(paths)]
    texts += [""] * (len(paths) - len(texts))
    rates = [len(paths) / t for t in times]
    s = score(truth, texts)
    RESULTS["tesseract"] = {"version": version, "rates": rates, "accuracy": s.accuracy, "cer": s.cer}
    row("tesseract", f"{version} CLI --psm 7, OMP_THREAD_LIMIT=1, list file of {len(paths)}, lines/s",
        f"{med(rates):.1f} (runs {runs_str(rates)})")
    row("tesseract", "Tesseract accuracy / CER on the same images", f"{100 * s.accuracy:.2f}% / {100 * s.cer:.2f}%")
    if "predict" in RESULTS:
        ours = med(RESULTS["predict"]["e2e_auto"])
        ratio = ours / med(rates)
        row("tesseract", "crnn predict e2e / Tesseract lines/s (target >= 10x)",
            f"{ratio:.1f}x -> {'met' if ratio >= 10 else 'NOT met'}")


# ---------------------------------------------------------------- memory
def peak_rss(lines: int, backend: str = "auto") -> tuple[float, float]:
    paths, _ = val_set()
    many = (paths * (lines // len(paths) + 1))[:lines]
    cmd = ["/usr/bin/time", "-f", "%M", *CRNN, "predict", "-", "--model", "codes-fast", "--format", "text", "--backend", backend]
    start = time.perf_counter()
    result = subprocess.run(cmd, input="\n".join(many) + "\n", capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-1500:])
    return int(result.stderr.strip().splitlines()[-1]) / 1024, elapsed


def memory(args) -> None:
    big = args.mem_lines
    small_rss, small_t = peak_rss(big // 10)
    big_rss, big_t = peak_rss(big)
    RESULTS["memory"] = {"lines": [big // 10, big], "max_rss_mb": [small_rss, big_rss], "seconds": [small_t, big_t]}
    row("memory", f"`crnn predict -` (default backend) max RSS over {big // 10}, {big} paths, MB",
        f"{small_rss:.0f}, {big_rss:.0f} (growth {big_rss - small_rss:+.0f} MB; {big / big_t:.0f} lines/s over {big_t:.0f} s)")
    # The eager model too: oneDNN caches kernels per input shape, which is what grew before.
    lines = [big // 10, big * 4 // 10]
    torch_runs = [peak_rss(n, "torch") for n in lines]
    RESULTS["memory"]["torch"] = {"lines": lines, "max_rss_mb": [r for r, _ in torch_runs]}
    row("memory", f"`crnn predict - --backend torch` max RSS over {lines[0]}, {lines[1]} paths, MB",
        f"{torch_runs[0][0]:.0f}, {torch_runs[1][0]:.0f} (growth {torch_runs[1][0] - torch_runs[0][0]:+.0f} MB)")


# ---------------------------------------------------------------- startup
def startup(args) -> None:
    paths, _ = val_set()
    n = 3 if args.quick else 5
    helps = [timed([*CRNN, "--help"]) for _ in range(n)]
    ones = [timed([*CRNN, "predict", paths[0], "--model", "codes-fast"]) for _ in range(n)]
    RESULTS["startup"] = {"help": helps, "predict_one": ones}
    row("startup", "`crnn --help` wall s (target <= 0.3)",
        f"{med(helps):.3f} (runs {runs_str(helps, '{:.3f}')}) -> {'met' if med(helps) <= 0.3 else 'NOT met'}")
    row("startup", "`crnn predict one.png` wall s", f"{med(ones):.3f} (runs {runs_str(ones, '{:.3f}')})")


# ---------------------------------------------------------------- accuracy (time to 95%)
def accuracy(args) -> None:
    budget = args.budget
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [*CRNN, "train", str(CODES), "--out", str(out), "--max-minutes", str(budget)]
        if args.threads_given:
            cmd += ["--threads", str(args.threads)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reached_wall = None
        seen = 0
        history = []
        while proc.poll() is None:
            time.sleep(0.5)
            metrics = out / "metrics.jsonl"
            if metrics.exists():
                history = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
                for h in history[seen:]:
                    if reached_wall is None and h["val_accuracy"] >= 0.95:
                        reached_wall = time.perf_counter() - start
                seen = len(history)
        if (out / "metrics.jsonl").exists():
            history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        wall = time.perf_counter() - start
        stderr = proc.stderr.read()
    if not history:
        raise RuntimeError(f"crnn train gave no metrics: {stderr[-1500:]}")
    first = next((h for h in history if h["val_accuracy"] >= 0.95), None)
    best = min(history, key=lambda h: h["val_cer"])
    RESULTS["accuracy"] = {"history": [{k: h[k] for k in ("epoch", "val_accuracy", "val_cer", "elapsed_seconds")}
                                       for h in history], "wall": wall, "budget_min": budget,
                           "reached_wall": reached_wall}
    if first:
        row("accuracy", "default `crnn train` (crnn-fast) time to 95% val sequence accuracy (target <= 120 s)",
            f"{first['elapsed_seconds']:.0f} s training (epoch {first['epoch']}), {reached_wall:.0f} s wall from "
            f"process start -> {'met' if reached_wall <= 120 else 'NOT met'}")
    else:
        row("accuracy", "default `crnn train` time to 95% val sequence accuracy (target <= 120 s)",
            f"not reached in the {budget:g} min budget (best {100 * best['val_accuracy']:.2f}%) -> NOT met")
    row("accuracy", f"ours after the {budget:g} min budget: best val CER / accuracy (epochs)",
        f"{100 * best['val_cer']:.2f}% / {100 * best['val_accuracy']:.2f}% ({len(history)} epochs, {wall:.0f} s wall)")


# ---------------------------------------------------------------- kraken
def kraken(args) -> None:
    from kraken_peer import run_kraken

    res = run_kraken(args.budget, args.kraken_venv, args.threads)
    RESULTS["kraken"] = res
    if res.get("error"):
        row("kraken", "ketos train", f"failed: {res['error']}")
        return
    row("kraken", f"ketos train, {args.budget:g} min budget: best val CER (epochs)",
        f"{100 * res['best_cer']:.2f}% ({res['epochs']} epochs; CER per epoch {runs_str([100 * c for c in res['cers']], '{:.2f}')})")
    if "accuracy" in RESULTS:
        ours = RESULTS["accuracy"]["history"]
        ours_cer = min(h["val_cer"] for h in ours)
        row("kraken", "val CER at equal time: ours vs kraken (target: ours lower)",
            f"{100 * ours_cer:.2f}% vs {100 * res['best_cer']:.2f}% -> {'met' if ours_cer < res['best_cer'] else 'NOT met'}")
        hit = next((h for h in ours if h["val_cer"] <= res["best_cer"]), None)
        if hit and res.get("best_seconds"):
            frac = hit["elapsed_seconds"] / res["best_seconds"]
            row("kraken", "time for ours to reach kraken's best CER / kraken's time to it (target <= 1/3)",
                f"{hit['elapsed_seconds']:.0f} s / {res['best_seconds']:.0f} s = {frac:.2f} -> {'met' if frac <= 1 / 3 else 'NOT met'}")


def print_table() -> None:
    print("\n| section | measurement | value |\n| --- | --- | --- |")
    for section, what, value in ROWS:
        print(f"| {section} | {what} | {value} |")
    print(f"\nload average at end (1/5/15 min): {load_avg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs, for development")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--only", default="", help="comma-separated sections to run")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--paper", action="store_true", help="also train crnn-paper (slow)")
    parser.add_argument("--budget", type=float, default=None, help="training budget in minutes for accuracy and kraken (default 5; quick 1)")
    parser.add_argument("--mem-lines", type=int, default=None, help="paths for the memory test (default 100000; quick 5000)")
    parser.add_argument("--kraken-venv", default=os.environ.get("KRAKEN_VENV", "/work/venv-kraken"))
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    args.threads_given = args.threads is not None
    args.threads = args.threads or os.cpu_count()
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 5.0)
    args.mem_lines = args.mem_lines or (5000 if args.quick else 100000)
    torch.set_num_threads(args.threads)
    if args.threads_given:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    chosen = [s for s in (args.only.split(",") if args.only else SECTIONS) if s and s not in args.skip.split(",")]
    for section in chosen:
        if section not in SECTIONS:
            sys.exit(f"unknown section {section!r}; sections: {', '.join(SECTIONS)}")
    started = time.perf_counter()
    for section in chosen:
        print(f"== {section} (load {load_avg()})", file=sys.stderr, flush=True)
        try:
            globals()[section](args)
        except Exception as exc:  # noqa: BLE001 - one broken section should not lose the others' figures
            row(section, "FAILED", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    RESULTS["rows"] = ROWS
    RESULTS["load_at_end"] = load_avg()
    RESULTS["seconds"] = time.perf_counter() - started
    print_table()
    print(f"suite took {RESULTS['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
