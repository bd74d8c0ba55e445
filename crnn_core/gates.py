"""Pass/fail gates on an evaluation: absolute limits and regression against a baseline report.

A gate compares one measured number with a limit. `crnn eval` exits 1 when any gate fails.
All rates are fractions (0.05 = 5%), as in the JSON report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CrnnError

# Float noise (e.g. a rate read back from JSON) must not fail a gate that is met exactly.
TOLERANCE = 1e-12
COMPARED = ("accuracy", "cer", "wer")


class BaselineError(CrnnError):
    """A baseline report cannot be read or is not a crnn eval report."""


def fmt(value: float) -> str:
    return f"{value:.6g}"


def _change(delta: float) -> str:
    return "unchanged" if delta == 0 else f"{'up' if delta > 0 else 'down'} {fmt(abs(delta))}"


@dataclass
class Gate:
    name: str        # min-accuracy | max-cer | max-accuracy-drop | max-cer-rise
    metric: str      # what `measured` is
    measured: float
    limit: float
    passed: bool
    message: str


@dataclass
class Baseline:
    path: str
    metrics: dict[str, float]
    samples: int | None
    data: str | None
    model: str | None


@dataclass
class GateOutcome:
    gates: list[Gate] = field(default_factory=list)
    baseline: Baseline | None = None
    deltas: dict[str, float] = field(default_factory=dict)  # current - baseline, per metric
    max_regression: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        baseline = None
        if self.baseline is not None:
            baseline = {"path": self.baseline.path, "max_regression": self.max_regression,
                        **{k: self.baseline.metrics[k] for k in COMPARED},
                        "deltas": dict(self.deltas), "warnings": list(self.warnings)}
        return {"passed": self.passed, "gates": [asdict(g) for g in self.gates], "baseline": baseline}


def load_baseline(path: str | Path) -> Baseline:
    """Read an earlier `crnn eval --json` report (any version)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline report not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read baseline report: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: baseline report is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or raw.get("format") != "crnn-eval":
        raise BaselineError(f"{path}: not a crnn eval report (expected \"format\": \"crnn-eval\", "
                            "as written by crnn eval --json)")
    metrics = {}
    for key in COMPARED:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BaselineError(f"{path}: baseline report has no numeric '{key}'")
        metrics[key] = float(value)
    samples = raw.get("samples") if isinstance(raw.get("samples"), int) else None
    return Baseline(str(path), metrics, samples, raw.get("data"), raw.get("model"))


def check(metrics: dict[str, float], samples: int, data: str, min_accuracy: float | None = None,
          max_cer: float | None = None, baseline: Baseline | None = None,
          max_regression: float = 0.0) -> GateOutcome:
    """Evaluate the gates asked for on `metrics` (accuracy, cer, wer as fractions)."""
    if samples <= 0 and (min_accuracy is not None or max_cer is not None or baseline is not None):
        # No sample means no error counted: every limit would be "met" on nothing.
        raise CrnnError(f"{data}: no samples were evaluated; a gate cannot pass on none")
    outcome = GateOutcome()
    accuracy, cer = metrics["accuracy"], metrics["cer"]
    if min_accuracy is not None:
        ok = accuracy >= min_accuracy - TOLERANCE
        outcome.gates.append(Gate("min-accuracy", "accuracy", accuracy, min_accuracy, ok,
                                  f"accuracy {fmt(accuracy)} is {'at least' if ok else 'below'} "
                                  f"the minimum {fmt(min_accuracy)} (--min-accuracy)"))
    if max_cer is not None:
        ok = cer <= max_cer + TOLERANCE
        outcome.gates.append(Gate("max-cer", "cer", cer, max_cer, ok,
                                  f"CER {fmt(cer)} is {'at most' if ok else 'above'} "
                                  f"the maximum {fmt(max_cer)} (--max-cer)"))
    if baseline is not None:
        outcome.baseline = baseline
        outcome.max_regression = max_regression
        outcome.deltas = {k: metrics[k] - baseline.metrics[k] for k in COMPARED}
        drop = baseline.metrics["accuracy"] - accuracy
        ok = drop <= max_regression + TOLERANCE
        outcome.gates.append(Gate(
            "max-accuracy-drop", "accuracy_drop", drop, max_regression, ok,
            f"accuracy {fmt(accuracy)} vs baseline {fmt(baseline.metrics['accuracy'])}: "
            f"{_change(-drop)}, "
            f"{'within' if ok else 'more than'} --max-regression {fmt(max_regression)}"))
        rise = cer - baseline.metrics["cer"]
        ok = rise <= max_regression + TOLERANCE
        outcome.gates.append(Gate(
            "max-cer-rise", "cer_rise", rise, max_regression, ok,
            f"CER {fmt(cer)} vs baseline {fmt(baseline.metrics['cer'])}: "
            f"{_change(rise)}, "
            f"{'within' if ok else 'more than'} --max-regression {fmt(max_regression)}"))
        if baseline.samples is not None and baseline.samples != samples:
            outcome.warnings.append(f"the baseline measured {baseline.samples} samples, this run {samples}")
        if baseline.data is not None and baseline.data != data:
            outcome.warnings.append(f"the baseline measured {baseline.data}, this run {data}")
    return outcome
