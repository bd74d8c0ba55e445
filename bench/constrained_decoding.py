"""Accuracy and cost of constrained decoding (--pattern, --lexicon) against plain decoding.

    python bench/constrained_decoding.py [--model codes-small] [--data sample_data/codes/val] [--repeat 3]

The model runs once over the set; every decoder then reads the same log-probs, so the
decode cost per line is measured apart from the network's (both are printed). The sample
set mixes three kinds of label (plates, meter readings, serial codes), so there are two
pattern settings:

- one alternation pattern covering all three kinds (what a user with mixed input would give);
- a pattern per kind, as a user reading only plates (or only meters) would give. The kind of
  each image is recovered by replaying sample_data/generate.py with its seed and checking
  that the replayed labels equal the stored ones.

The lexicon setting uses every label of the train and val splits (2,800 entries, each val
label among them): a closed vocabulary like the CRNN paper's lexicon-based transcription.
Markdown tables go to stdout. Timings are single-threaded (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.automata import compile_lexicon  # noqa: E402
from crnn_core.data import discover, equal_width_batches, load_all, to_tensor_batch  # noqa: E402
from crnn_core.decode import beam_search  # noqa: E402
from crnn_core.heads import decode_batch  # noqa: E402
from crnn_core.patterns import compile_pattern  # noqa: E402
from crnn_core.metrics import score  # noqa: E402
from crnn_core.modelfile import load_model  # noqa: E402

PLATE = r"[A-Z]{1,3}[ -]?[0-9]{2,4}( ?[A-Z]{1,2})?"
METER = r"[0-9]{3,7}|[0-9]{1,6}\.[0-9]{1,6}"
CODE = r"[A-Z0-9]{3,8}|[A-Z0-9]{1,7}-[A-Z0-9]{1,7}"
KIND_PATTERNS = {"plate": PLATE, "meter": METER, "code": CODE}
ANY_KIND = f"{PLATE}|{METER}|{CODE}"


def replay_kinds(train: int = 2400, val: int = 400, seed: int = 2015) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label, kind) for each image of the train and val splits, by re-running the generator's RNG."""
    sys.path.insert(0, str(REPO / "sample_data"))
    import generate

    rng = random.Random(seed)

    def split(count: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(count):
            text, kind = generate.random_label(rng)
            generate.render(text, kind, rng)  # consumes the RNG exactly as write_split does
            if rng.random() < 0.7:
                rng.randint(60, 88)
            out.append((text, kind))
        return out

    return split(train), split(val)


def forward_pass(loaded, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Each image's log-probabilities, in equal-width batches as in recognize_arrays, and ms per line."""
    log_probs: list[np.ndarray] = [None] * len(arrays)  # type: ignore[list-item]
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in equal_width_batches([a.shape[1] for a in arrays], 64):
            images, widths = to_tensor_batch([arrays[i] for i in batch])
            out = loaded.model(images).numpy()
            for j, i in enumerate(batch):
                log_probs[i] = out[: loaded.config.time_steps(widths[j]), j].copy()
    return log_probs, (time.perf_counter() - started) / len(arrays) * 1000


def print_decodings(settings, texts: list[str], repeat: int) -> None:
    """One table row per decoding setting: accuracy, CER, unmatched readings, median decode time."""
    print("| decoding | accuracy | CER | no accepted reading | decode ms/line |")
    print("| --- | --- | --- | --- | --- |")
    for name, run in settings:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            outputs = [run(i) for i in range(len(texts))]
            times.append((time.perf_counter() - started) / len(texts) * 1000)
        s = score(texts, [t for t, _ in outputs])
        unmatched = sum(not m for _, m in outputs)
        print(f"| {name} | {s.accuracy:.2%} ({s.correct}/{s.samples}) | {s.cer:.4f} | {unmatched} | "
              f"{statistics.median(times):.2f} |")


def print_per_kind(texts: list[str], kinds: list[str], greedy, by_kind) -> None:
    print("\nper kind (greedy vs the kind's own pattern, beam 16):\n")
    print("| kind | images | greedy accuracy | pattern accuracy |")
    print("| --- | --- | --- | --- |")
    for kind in KIND_PATTERNS:
        idx = [i for i in range(len(texts)) if kinds[i] == kind]
        ga = score([texts[i] for i in idx], [greedy(i)[0] for i in idx])
        ca = score([texts[i] for i in idx], [by_kind(i)[0] for i in idx])
        print(f"| {kind} | {len(idx)} | {ga.accuracy:.2%} ({ga.correct}) | {ca.accuracy:.2%} ({ca.correct}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codes-small")
    parser.add_argument("--data", default=str(REPO / "sample_data" / "codes" / "val"))
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    loaded = load_model(args.model)
    alphabet = loaded.alphabet
    dataset = discover(args.data)
    arrays, problems = load_all([s.path for s in dataset.samples], loaded.preprocess, 2)
    assert not problems, problems
    texts = [s.text for s in dataset.samples]

    log_probs, forward_ms = forward_pass(loaded, arrays)

    kinds = None
    train_kinds, val_kinds = replay_kinds()
    if [t for t, _ in val_kinds] == texts:
        kinds = [k for _, k in val_kinds]
    else:
        print("note: replayed labels differ from the stored ones; per-kind rows skipped", file=sys.stderr)

    lexicon_words = sorted({s.text for s in discover(REPO / "sample_data" / "codes" / "train").samples} | set(texts))
    lexicon = compile_lexicon(lexicon_words, alphabet).automaton
    any_kind = compile_pattern(ANY_KIND, alphabet)
    per_kind = {k: compile_pattern(p, alphabet) for k, p in KIND_PATTERNS.items()}

    def plain(beam):
        def run(i):
            lp = log_probs[i]
            d = decode_batch(lp[:, None, :], [lp.shape[0]], beam)[0]  # greedy, or the unconstrained beam search
            return alphabet.decode(d.ids), True
        return run

    def constrained(automaton_for, beam):
        def run(i):
            d = beam_search(log_probs[i][:, None, :], [log_probs[i].shape[0]], beam, automaton_for(i))[0]
            return (alphabet.decode(d.ids) if d.matched else ""), d.matched
        return run

    settings = [
        ("greedy (no constraint)", plain(1)),
        ("beam 16 (no constraint)", plain(16)),
        ("pattern: any kind, beam 4", constrained(lambda i: any_kind, 4)),
        ("pattern: any kind, beam 16", constrained(lambda i: any_kind, 16)),
        ("pattern: any kind, beam 64", constrained(lambda i: any_kind, 64)),
    ]
    if kinds is not None:
        settings.append(("pattern: the image's kind, beam 16", constrained(lambda i: per_kind[kinds[i]], 16)))
    settings.append((f"lexicon: {len(lexicon_words)} labels, beam 16", constrained(lambda i: lexicon, 16)))

    print(f"model {args.model}, {len(texts)} images of {args.data}; forward pass {forward_ms:.2f} ms/line "
          f"(1 thread, batches of equal width)\n")
    print_decodings(settings, texts, args.repeat)
    if kinds is not None:
        print_per_kind(texts, kinds, plain(1), constrained(lambda i: per_kind[kinds[i]], 16))


if __name__ == "__main__":
    main()
