"""The averaged weights a run's last.pt holds, written as a model file (docs/accuracy.md, "The end of the schedule").

    python bench/averaged_last.py RUN OUT.pt
    crnn eval OUT.pt DATA/test --per-sample --json last.json    # against RUN/best.pt

`last.pt` stores the trained weights (to resume from) and, under `state["average"]`, the
weight average that validation reads and `best.pt` stores; this writes the latter with the
run's alphabet and preprocessing, so the last epoch can be read like any model. On a run whose
last epoch was its best epoch the result has `best.pt`'s weights exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crnn_core.modelfile import load_model, read_payload, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    loaded = load_model(args.run / "last.pt")
    average = read_payload(args.run / "last.pt")["state"]["average"]
    if average is None:  # `--ema 0`: the trained weights are what validation read
        average = {f"module.{k}": v for k, v in loaded.model.state_dict().items()}
    loaded.model.load_state_dict({k.removeprefix("module."): v for k, v in average.items() if k.startswith("module.")})
    save_model(args.out, loaded.model, loaded.alphabet, loaded.preprocess, loaded.train)
    print(args.out)


if __name__ == "__main__":
    main()
