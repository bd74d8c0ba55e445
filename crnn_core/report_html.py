"""`crnn eval --html`: one self-contained page (images inlined as PNG data URIs, no external files).

Metrics, gates, confusion pairs, per-character errors, and a gallery of the wrong readings,
worst first, with the differing characters highlighted on both lines.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

from PIL import Image, ImageOps

from . import __version__
from .confusion import DELETE, EQUAL, INSERT, REPLACE, align
from .evaluate import Report, SampleResult
from .gates import GateOutcome, fmt
from .reports import display_path, wrong_samples

# The gallery stops here so a badly broken model on a large set still gives a page a browser opens.
MAX_GALLERY = 500
MAX_CONFUSIONS = 20  # rows of the confusion and per-character tables
# Inlined images are shrunk to fit this box (the page shows them at 48 px high anyway).
MAX_IMAGE_HEIGHT, MAX_IMAGE_WIDTH = 96, 1200

CSS = """
:root { --sub: #ffd166; --del: #ef476f; --ins: #4cc9f0; --ink: #1d2330; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0; padding: 24px 32px 48px; background: #f8fafc; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.sub-title { color: var(--muted); margin-bottom: 16px; word-break: break-all; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; margin-left: 8px;
           font-size: 14px; vertical-align: middle; }
.verdict.pass { background: #d1fae5; color: #065f46; } .verdict.fail { background: #fee2e2; color: #991b1b; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card .value { font-size: 22px; font-weight: 600; } .card .label { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; background: white; border: 1px solid var(--line); }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { background: #f1f5f9; font-weight: 600; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #fff1f2; }
.bar { display: inline-block; height: 10px; background: #94a3b8; border-radius: 2px; vertical-align: middle; }
.columns { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
code, .text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre; }
.char { display: inline-block; min-width: 1.4em; padding: 0 4px; background: #f1f5f9; border-radius: 3px; text-align: center; }
.none { color: var(--muted); font-style: italic; font-family: inherit; }
mark { color: inherit; border-radius: 2px; padding: 0 1px; }
mark.sub { background: var(--sub); } mark.del { background: var(--del); color: white; }
mark.ins { background: var(--ins); }
.legend mark { padding: 0 6px; margin-right: 4px; }
.legend { color: var(--muted); font-size: 13px; margin-bottom: 12px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
.error { margin: 0; background: white; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
.error img { display: block; height: 48px; max-width: 100%; object-fit: contain; object-position: left;
             background: #e2e8f0; margin-bottom: 8px; }
.error img.broken { outline: 2px dashed var(--del); }
.error .rank { float: right; color: var(--muted); font-size: 12px; }
.row { display: flex; gap: 8px; align-items: baseline; font-size: 16px; }
.row .k { width: 72px; color: var(--muted); font-size: 12px; flex: none; }
.meta { color: var(--muted); font-size: 12px; margin-top: 6px; word-break: break-all; }
.missing { color: var(--del); font-size: 13px; margin-bottom: 8px; }
.note { color: var(--muted); margin-top: 10px; }
"""

# Marks each gallery image that failed to decode, and counts those that did: a browser test
# reads the count from the rendered DOM (`data-images-rendered` on <body>).
SCRIPT = """
addEventListener("load", function () {
  var shown = 0;
  document.querySelectorAll(".gallery img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { shown++; } else { img.classList.add("broken"); }
  });
  document.body.setAttribute("data-images-rendered", String(shown));
});
"""

_MARK = {REPLACE: "sub", DELETE: "del", INSERT: "ins"}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def image_data_uri(path: str) -> str | None:
    """The image as a PNG data URI, shrunk to fit the inline box; None when it cannot be read."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode not in ("L", "RGB", "RGBA", "LA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            image.thumbnail((MAX_IMAGE_WIDTH, MAX_IMAGE_HEIGHT))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def highlighted(expected: str, predicted: str) -> tuple[str, str]:
    """Both texts as HTML, each run of differing characters wrapped in <mark class=sub|del|ins>."""
    sides: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])
    for op, e, p in align(expected, predicted):
        kind = "" if op == EQUAL else _MARK[op]
        if e:
            sides[0].append((kind, e))
        if p:
            sides[1].append((kind, p))

    def render(chars: list[tuple[str, str]]) -> str:
        if not chars:
            return '<span class="none">(nothing)</span>'
        out, run, run_kind = [], "", None
        for kind, ch in chars + [(None, "")]:
            if kind != run_kind and run:
                out.append(f'<mark class="{run_kind}">{_e(run)}</mark>' if run_kind else _e(run))
                run = ""
            run_kind = kind
            run += ch
        return "".join(out)

    return render(sides[0]), render(sides[1])


def _char_cell(char: str) -> str:
    if not char:
        return '<span class="none">nothing</span>'
    shown = "␣" if char == " " else char
    return f'<span class="char text" title="U+{ord(char):04X}">{_e(shown)}</span>'


def _gallery_item(rank: int, r: SampleResult, data: str) -> str:
    expected, predicted = highlighted(r.expected, r.predicted)
    uri = image_data_uri(r.path)
    name = display_path(r.path, data)
    picture = (f'<img src="{uri}" alt="{_e(name)}">' if uri
               else '<div class="missing">image no longer readable</div>')
    return (f'<figure class="error" data-errors="{r.errors}" data-confidence="{r.confidence:.6f}">'
            f'<span class="rank">#{rank}</span>{picture}<figcaption>'
            f'<div class="row"><span class="k">expected</span><span class="text">{expected}</span></div>'
            f'<div class="row"><span class="k">predicted</span><span class="text">{predicted}</span></div>'
            f'<div class="meta">{r.errors} error{"s" if r.errors != 1 else ""} · confidence {r.confidence:.3f}'
            f' · {_e(name)}</div></figcaption></figure>')


def html_report(report: Report, outcome: GateOutcome, max_gallery: int = MAX_GALLERY) -> str:
    parts = _head_and_cards(report, outcome) + _gates(outcome) + _confusions(report.analysis())
    parts += _gallery(report, max_gallery)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _head_and_cards(report: Report, outcome: GateOutcome) -> list[str]:
    s = report.scores
    decoder = "greedy" if report.beam <= 1 else f"beam {report.beam}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = ""
    if outcome.gates:
        verdict = (f'<span class="verdict pass">all {len(outcome.gates)} gates passed</span>' if outcome.passed else
                   f'<span class="verdict fail">{len(outcome.failed)} of {len(outcome.gates)} gates failed</span>')
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>crnn eval: {_e(display_path(report.model, '.'))}</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>crnn eval{verdict}</h1>",
        f'<div class="sub-title">{_e(report.model)} on {_e(report.data)} · {decoder} decoding · '
        f"crnn {_e(__version__)} · {when}</div>",
        '<section class="cards" id="metrics">',
    ]
    cards = [("samples", str(s.samples), f"{len(report.problems)} skipped" if report.problems else "evaluated"),
             ("sequence accuracy", f"{100 * s.accuracy:.2f}%", f"{s.correct} of {s.samples} exactly right"),
             ("CER", f"{s.cer:.4f}", f"{s.char_errors} of {s.chars} characters"),
             ("WER", f"{s.wer:.4f}", f"{s.word_errors} of {s.words} words"),
             ("speed", f"{report.lines_per_second:.0f}/s", f"{report.seconds:.2f} s in all")]
    for label, value, detail in cards:
        parts.append(f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
                     f'<div class="label">{_e(detail)}</div></div>')
    parts.append("</section>")
    return parts


def _gates(outcome: GateOutcome) -> list[str]:
    if not outcome.gates:
        return []
    parts = ['<h2>Gates</h2><table id="gates"><tr><th>gate</th><th>measured</th><th>limit</th>'
             "<th>result</th><th></th></tr>"]
    for g in outcome.gates:
        parts.append(f'<tr class="{"pass" if g.passed else "fail"}"><td><code>{_e(g.name)}</code></td>'
                     f'<td class="num">{fmt(g.measured)}</td><td class="num">{fmt(g.limit)}</td>'
                     f'<td>{"pass" if g.passed else "FAIL"}</td><td>{_e(g.message)}</td></tr>')
    parts.append("</table>")
    parts += [f'<p class="note">Note: {_e(w)}</p>' for w in outcome.warnings]
    return parts


def _confusions(analysis) -> list[str]:
    """The confusion pairs and the per-character table, side by side."""
    confusions = analysis.confusions_list(MAX_CONFUSIONS)
    chars = [c for c in analysis.characters_list() if c["errors"]]
    parts = ['<div class="columns"><section>',
             f'<h2>Confusion pairs <span class="note">({len(analysis.confusions)} kinds, '
             f"{sum(analysis.confusions.values())} edits)</span></h2>"]
    if confusions:
        top = confusions[0]["count"]
        parts.append('<table id="confusions"><tr><th>expected</th><th>read as</th><th>count</th><th></th></tr>')
        for c in confusions:
            parts.append(f"<tr><td>{_char_cell(c['expected'])}</td><td>{_char_cell(c['predicted'])}</td>"
                         f'<td class="num">{c["count"]}</td>'
                         f'<td><span class="bar" style="width:{max(2, round(120 * c["count"] / top))}px"></span></td></tr>')
        parts.append("</table>")
        if len(analysis.confusions) > len(confusions):
            parts.append(f'<p class="note">{len(analysis.confusions) - len(confusions)} rarer pairs not shown '
                         "(all are in the JSON report).</p>")
    else:
        parts.append('<p class="note">No character was misread.</p>')
    parts += ["</section><section>", "<h2>Errors per character</h2>"]
    if chars:
        parts.append('<table id="characters"><tr><th>char</th><th>in labels</th><th>substituted</th>'
                     "<th>deleted</th><th>inserted</th><th>error rate</th></tr>")
        for c in chars[:MAX_CONFUSIONS]:
            rate = (c["substituted"] + c["deleted"]) / c["expected"] if c["expected"] else None
            parts.append(f"<tr><td>{_char_cell(c['char'])}</td><td class=num>{c['expected']}</td>"
                         f"<td class=num>{c['substituted']}</td><td class=num>{c['deleted']}</td>"
                         f"<td class=num>{c['inserted']}</td>"
                         f"<td class=num>{'—' if rate is None else f'{100 * rate:.1f}%'}</td></tr>")
        parts.append("</table>")
    else:
        parts.append('<p class="note">None.</p>')
    parts.append("</section></div>")
    return parts


def _gallery(report: Report, max_gallery: int) -> list[str]:
    wrong = wrong_samples(report)
    shown = wrong[:max_gallery]
    parts = [f'<h2 id="gallery-title">Errors, worst first ({len(wrong)} of {report.scores.samples} samples wrong'
             + (f", {len(shown)} shown" if len(shown) < len(wrong) else "") + ")</h2>",
             '<div class="legend"><mark class="sub">&nbsp;</mark>read as another character '
             '<mark class="del">&nbsp;</mark>missing from the reading '
             '<mark class="ins">&nbsp;</mark>extra in the reading</div>',
             f'<section class="gallery" id="gallery" data-items="{len(shown)}" data-wrong="{len(wrong)}">']
    parts += [_gallery_item(i, r, report.data) for i, r in enumerate(shown, 1)]
    parts.append("</section>")
    if not wrong:
        parts.append('<p class="note">Every sample was read correctly.</p>')
    return parts
