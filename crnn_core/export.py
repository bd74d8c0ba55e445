"""Export to ONNX and to torch.export (.pt2), each checked against the eager model.

ONNX uses the TorchScript-based exporter (`dynamo=False`): torch 2.13's dynamo exporter fails
on an LSTM whose time axis is dynamic. torch.export itself specialises nn.LSTM's time axis
(pytorch/pytorch#115092), so the .pt2 graph runs the same weights through a BiLSTM written
with `scan`, which keeps the width dynamic.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .errors import ExportError
from .heads import head_for
from .modelfile import LoadedModel, atomic_write_bytes, temp_path_beside
from .onnx_runner import EXPORT_VERSION
from .outputs import check_output_path

FORMATS = ("onnx", "pt2")
# (batch, width) pairs the exported file is run at; two batch sizes and three widths.
CHECK_SHAPES = ((1, 96), (3, 160), (5, 317))


@dataclass
class ExportReport:
    path: Path
    format: str
    bytes: int
    max_abs_diff: float
    texts_checked: int
    texts_equal: int
    shapes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.texts_equal == self.texts_checked


def metadata(loaded: LoadedModel) -> dict[str, str]:
    """What a consumer needs to use the exported file on its own."""
    common = {
        "crnn.format": "crnn-export",
        "crnn.version": EXPORT_VERSION if loaded.preprocess.width_scale != 1.0 else "1",
        "crnn.head": loaded.config.head,
        "crnn.alphabet": loaded.alphabet.chars,
        "crnn.input": "images: float32 [batch, channels, height, width], pixel / 127.5 - 1",
        "crnn.preprocess": json.dumps(loaded.preprocess.to_dict()),
        "crnn.config": json.dumps(loaded.config.to_dict()),
    }
    if loaded.train.get("calibration"):  # so predict on the export reports the same p_correct
        common["crnn.calibration"] = json.dumps(loaded.train["calibration"])
    if loaded.path is not None and Path(loaded.path).is_file():  # which model file this was made from
        common["crnn.source_sha256"] = hashlib.sha256(Path(loaded.path).read_bytes()).hexdigest()
    return dict(common, **head_for(loaded.config).export_metadata(loaded.config))


class ScanBiLSTM(nn.Module):
    """The weights of an nn.LSTM (bidirectional or not), run step by step with `scan` (export-friendly)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm
        self.hidden = lstm.hidden_size

    def _direction(self, x: torch.Tensor, layer: int, reverse: bool) -> torch.Tensor:
        from torch._higher_order_ops.scan import scan

        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih = getattr(self.lstm, "weight_ih" + suffix)
        w_hh = getattr(self.lstm, "weight_hh" + suffix)
        bias = getattr(self.lstm, "bias_ih" + suffix) + getattr(self.lstm, "bias_hh" + suffix)
        if reverse:
            x = x.flip(0)
        gates_x = nn.functional.linear(x, w_ih, bias)
        h0 = x.new_zeros(x.shape[1], self.hidden)

        def step(carry, gx):
            h, c = carry
            i, f, g, o = (gx + h @ w_hh.t()).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h, c), h.clone()

        _, out = scan(step, (h0, h0.clone()), gates_x)
        return out.flip(0) if reverse else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in range(self.lstm.num_layers):
            if self.lstm.bidirectional:
                x = torch.cat([self._direction(x, layer, False), self._direction(x, layer, True)], -1)
            else:
                x = self._direction(x, layer, False)
        return x


class ExportableCRNN(nn.Module):
    """The CRNN's forward pass, arranged so torch.export keeps batch and width dynamic.

    Four workarounds, each for a guard torch.export would otherwise bake in: the BiLSTM runs
    through `scan` (nn.LSTM fixes the time axis); `torch._check` states that there are at
    least two time steps (`1 % T != 0` is otherwise unprovable); and one image is appended
    and dropped again, so the traced batch is never 1 (a contiguity guard fails at batch 1);
    the backbone is traced in plain NCHW layout (channels-last strides pin the width).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        # Plain NCHW weights: channels-last adds stride guards that pin the width.
        self.backbone = copy.deepcopy(model.backbone).to(memory_format=torch.contiguous_format)
        self.rnn = ScanBiLSTM(model.rnn) if model.rnn is not None else None
        self.head = model.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.cat([images, images[:1]], 0)
        features = self.backbone(images).flatten(1, 2)  # B x (C*H) x T
        torch._check(features.shape[2] >= 2)
        seq = features.permute(2, 0, 1).contiguous()
        if self.rnn is not None:
            seq = self.rnn(seq)
        return self.head(seq).float().log_softmax(-1)[:, :-1]


def check_images(loaded: LoadedModel, count: int, seed: int = 0) -> list[np.ndarray]:
    """Text images rendered from the model's own alphabet, as parity-check inputs."""
    rng = random.Random(seed)
    chars = loaded.alphabet.chars.replace(" ", "") or "0"
    font = ImageFont.load_default(size=24)
    arrays = []
    for _ in range(count):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(3, 8)))
        left, top, right, bottom = font.getbbox(text)
        image = Image.new("L", (right - left + 12, bottom - top + 10), 235)
        ImageDraw.Draw(image).text((6 - left, 5 - top), text, font=font, fill=20)
        if loaded.preprocess.channels == 3:
            image = image.convert("RGB")
        arrays.append(loaded.preprocess.from_pil(image))
    return arrays


def _batch(arrays: list[np.ndarray], width: int, channels: int) -> torch.Tensor:
    resized = [np.asarray(Image.fromarray(a).resize((width, a.shape[0]), Image.Resampling.BILINEAR)) for a in arrays]
    batch = torch.from_numpy(np.stack(resized)).float().div_(127.5).sub_(1.0)
    return batch.unsqueeze(1) if channels == 1 else batch.permute(0, 3, 1, 2).contiguous()


def _parity(loaded: LoadedModel, run, fmt: str, path: Path) -> ExportReport:
    model = loaded.model.eval()
    arrays = check_images(loaded, max(b for b, _ in CHECK_SHAPES))
    max_diff, checked, equal = 0.0, 0, 0
    for batch_size, width in CHECK_SHAPES:
        images = _batch(arrays[:batch_size], width, loaded.preprocess.channels)
        with torch.inference_mode():
            expected = model(images).numpy()
        got = np.asarray(run(images))
        if got.shape != expected.shape:
            raise ExportError(f"{path}: exported model gave shape {got.shape} at batch {batch_size}, width {width}; "
                              f"the eager model gives {expected.shape}")
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        steps = [loaded.config.output_length(width)] * batch_size
        head = head_for(loaded.config)
        for a, b in zip(head.decode(expected, steps), head.decode(got, steps)):
            checked += 1
            equal += a.ids == b.ids
    return ExportReport(path, fmt, path.stat().st_size, max_diff, checked, equal, list(CHECK_SHAPES))


def export_onnx(loaded: LoadedModel, out: Path, opset: int = 17) -> ExportReport:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs the onnx extras: pip install 'crnn[onnx]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    model = loaded.model.eval()
    example = torch.zeros(2, loaded.preprocess.channels, loaded.preprocess.height, 128)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buffer, input_names=["images"], output_names=["log_probs"],
                dynamic_axes={"images": {0: "batch", 3: "width"}, "log_probs": {0: "time", 1: "batch"}},
                opset_version=opset, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; each becomes one line
        raise ExportError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(loaded).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"crnn model {loaded.config.name}; see metadata_props crnn.*"
    tmp = temp_path_beside(out)
    try:
        serialized = proto.SerializeToString()
        tmp.write_bytes(serialized)
        # checked from the bytes written: ONNX Runtime refuses a file name that is not UTF-8
        session = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])
        report = _parity(loaded, lambda x: session.run(None, {"images": x.numpy()})[0], "onnx", tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    report.path = out
    return report


def export_pt2(loaded: LoadedModel, out: Path) -> ExportReport:
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableCRNN(loaded.model.eval()).eval()
    example = torch.zeros(2, loaded.preprocess.channels, loaded.preprocess.height, 128)
    dims = {"images": {0: torch.export.Dim("batch", min=1, max=4096),
                       3: torch.export.Dim("width", min=max(16, loaded.config.width_for_length(2)),
                                           max=loaded.preprocess.max_width)}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(wrapper, (example,), dynamic_shapes=dims)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; each becomes one line
        raise ExportError(f"torch.export failed: {str(exc).splitlines()[0]}") from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"crnn.json": json.dumps(metadata(loaded))})
    atomic_write_bytes(out, buffer.getvalue())
    loaded_program = torch.export.load(str(out))
    module = loaded_program.module()
    return _parity(loaded, lambda x: module(x).detach().numpy(), "pt2", out)


def default_output(loaded: LoadedModel, fmt: str) -> Path:
    """Beside the model file, same stem; a bundled model exports into the current folder."""
    from .config import bundled_dir

    path = loaded.path
    if path is None or Path(str(bundled_dir())) in path.resolve().parents:
        return Path((path.stem if path else loaded.config.name) + "." + fmt)
    return path.with_suffix("." + fmt)


def export(loaded: LoadedModel, fmt: str, out: Path | None = None, replace: bool = True) -> ExportReport:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    if out is None:
        out = default_output(loaded, fmt)
    out = Path(out)
    # Before any work: the output must not be the model file itself (same inode, however
    # spelled), a device or a folder, nor (unless `replace`) any file that exists; a symlink is
    # written through to its target.
    target = check_output_path(out, [loaded.path], "--out", replace)
    report = export_onnx(loaded, target) if fmt == "onnx" else export_pt2(loaded, target)
    report.path = out
    if not report.ok:
        raise ExportError(f"{out}: written, but the exported model reads {report.texts_checked - report.texts_equal} of "
                          f"{report.texts_checked} check images differently from the eager model "
                          f"(largest log-prob difference {report.max_abs_diff:.3g})")
    return report
