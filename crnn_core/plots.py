"""Training curves as a PNG (`curves.png` in the run folder), drawn with matplotlib.

matplotlib is imported on first use, and only its object API with the Agg canvas is used: no
pyplot, no global backend switch, no display needed. Drawing must never stop training, so
`CurvePlotter.update` catches everything and reports the first problem through a callback.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .modelfile import atomic_write_bytes


def curves_png(history: list[dict[str, Any]], kept_epoch: int | None = None) -> bytes:
    """Training loss, validation CER and validation accuracy per epoch, side by side; a dashed
    line marks `kept_epoch` (the one best.pt holds), else the epoch of the lowest CER."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, cer_ax, acc_ax = figure.subplots(1, 3)
    series = ((loss_ax, "train_loss", "training loss", "tab:blue"),
              (cer_ax, "val_cer", "validation CER", "tab:red"),
              (acc_ax, "val_accuracy", "validation sequence accuracy", "tab:green"))
    finite_losses = [h["train_loss"] for h in history if _finite(h.get("train_loss"))]
    best = marked_epoch(history, kept_epoch)
    for ax, key, title, colour in series:
        values = [h.get(key) if _finite(h.get(key)) else math.nan for h in history]
        ax.plot(epochs, values, marker="o", markersize=3, color=colour)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if best is not None:
            ax.axvline(best["epoch"], color="grey", linestyle="--", linewidth=0.8)
    # Loss falls by orders of magnitude; a log axis keeps late epochs readable.
    if finite_losses and min(finite_losses) > 0 and max(finite_losses) / min(finite_losses) > 20:
        loss_ax.set_yscale("log")
    # Zero always in view, with a little room around the data, so a flat line at 0 or 100% stays visible.
    cer_top = max((h["val_cer"] for h in history if _finite(h.get("val_cer"))), default=0.0) or 0.01
    cer_ax.set_ylim(-0.04 * cer_top, 1.08 * cer_top)
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if best is not None:
        figure.suptitle(f"best.pt: epoch {best['epoch']}, CER {best['val_cer']:.4f}, "
                        f"accuracy {100 * best['val_accuracy']:.2f}% (dashed line)", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def marked_epoch(history: list[dict[str, Any]], kept_epoch: int | None) -> dict[str, Any] | None:
    """The record of `kept_epoch`, else of the lowest validation CER (then the highest accuracy)."""
    lowest = min(history, key=lambda h: (h["val_cer"], -h["val_accuracy"])) if history else None
    return next((h for h in reversed(history) if h["epoch"] == kept_epoch), lowest)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class CurvePlotter:
    """Redraws `path` from the epoch history; never raises. `on_problem(message)` hears the first failure."""

    def __init__(self, path: Path, on_problem: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.on_problem = on_problem
        self.failed = False

    def update(self, history: list[dict[str, Any]], kept_epoch: int | None = None) -> bool:
        if not history:
            return False
        try:
            atomic_write_bytes(self.path, curves_png(history, kept_epoch))
            return True
        except Exception as exc:  # noqa: BLE001 - a picture is never worth a lost training run
            if not self.failed and self.on_problem is not None:
                reason = "matplotlib is not installed" if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
                try:
                    self.on_problem(f"could not draw {self.path.name} ({reason}); training goes on")
                except Exception:  # noqa: BLE001
                    pass
            self.failed = True
            return False
