"""Reports of an evaluation for CI systems: JUnit XML and a Markdown job summary.

Both are built from an `evaluate.Report` and the `gates.GateOutcome` checked on it; the JSON
report is `Report.to_json`. The HTML page is in `report_html.py`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .evaluate import Report, SampleResult
from .gates import GateOutcome, fmt

# Failed samples listed in the JUnit "samples" suite; more would bury the gates in CI views.
JUNIT_MAX_SAMPLES = 100
MARKDOWN_WORST = 10

# Characters XML 1.0 cannot carry at all (C0 controls but tab/newline/CR, surrogates, U+FFFE/F).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrong_samples(report: Report) -> list[SampleResult]:
    """Every wrong sample, worst first (the order of `Report.worst`)."""
    return report.worst(len(report.results))


def display_path(path: str, data: str) -> str:
    """A sample's path relative to the evaluated folder when it lies inside it."""
    base = Path(data)
    if not base.is_dir():
        base = base.parent
    try:
        return os.path.relpath(path, base) if Path(path).resolve().is_relative_to(base.resolve()) else path
    except (OSError, ValueError):
        return path


def sample_message(r: SampleResult) -> str:
    return (f"expected {_quoted(r.expected)}, read {_quoted(r.predicted)} "
            f"({r.errors} character error{'s' if r.errors != 1 else ''}, confidence {r.confidence:.3f})")


def junit_xml(report: Report, outcome: GateOutcome, max_samples: int = JUNIT_MAX_SAMPLES) -> bytes:
    """One test case per gate in suite "gates"; the failed samples, worst first, in suite "samples"."""
    s = report.scores
    wrong = wrong_samples(report)
    listed = wrong[:max_samples]
    root = ET.Element("testsuites", name="crnn eval", tests=str(len(outcome.gates) + len(listed)),
                      failures=str(len(outcome.failed) + len(listed)), errors="0", time=f"{report.seconds:.3f}")

    gates = ET.SubElement(root, "testsuite", name="gates", tests=str(len(outcome.gates)),
                          failures=str(len(outcome.failed)), errors="0", skipped="0", time="0")
    properties = ET.SubElement(gates, "properties")
    for name, value in (("model", report.model), ("data", report.data), ("samples", s.samples),
                        ("accuracy", fmt(s.accuracy)), ("cer", fmt(s.cer)), ("wer", fmt(s.wer)),
                        ("decoder", "greedy" if report.beam <= 1 else f"beam-{report.beam}")):
        ET.SubElement(properties, "property", name=name, value=_xml_text(str(value)))
    for gate in outcome.gates:
        case = ET.SubElement(gates, "testcase", classname="crnn.eval.gates", name=gate.name, time="0")
        if gate.passed:
            ET.SubElement(case, "system-out").text = gate.message
        else:
            failure = ET.SubElement(case, "failure", type="GateFailed", message=gate.message)
            failure.text = f"measured {fmt(gate.measured)}, limit {fmt(gate.limit)}"

    samples = ET.SubElement(root, "testsuite", name="samples", tests=str(len(listed)), failures=str(len(listed)),
                            errors="0", skipped="0", time=f"{report.seconds:.3f}")
    for r in listed:
        case = ET.SubElement(samples, "testcase", classname="crnn.eval.samples",
                             name=_xml_text(display_path(r.path, report.data)), time="0")
        message = _xml_text(sample_message(r))
        ET.SubElement(case, "failure", type="WrongReading", message=message).text = message
    summary = f"{len(wrong)} of {s.samples} samples read wrong"
    if len(wrong) > len(listed):
        summary += f"; the worst {len(listed)} are listed, {len(wrong) - len(listed)} more are not"
    ET.SubElement(samples, "system-out").text = summary
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _md_code(text: str) -> str:
    """`text` as a Markdown code span that is safe inside a table cell."""
    if not text:
        return "*(empty)*"
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" or text.startswith(" ") or text.endswith(" ") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _signed(value: float) -> str:
    return "±0" if value == 0 else f"{value:+.4f}"


def markdown(report: Report, outcome: GateOutcome, worst: int = MARKDOWN_WORST) -> str:
    """A short summary for a CI job page: verdict, metrics (with baseline deltas), gates, worst samples."""
    s = report.scores
    lines = []
    if not outcome.gates:
        lines.append("## crnn eval")
    elif outcome.passed:
        lines.append(f"## ✅ crnn eval: all {len(outcome.gates)} gates passed")
    else:
        lines.append(f"## ❌ crnn eval: {len(outcome.failed)} of {len(outcome.gates)} gates failed")
    decoder = "greedy decoding" if report.beam <= 1 else f"beam search (width {report.beam})"
    lines += ["", f"{_md_code(report.model)} on {_md_code(report.data)}: {s.samples} samples, {decoder}, "
              f"{report.lines_per_second:.0f} lines/s", ""]

    base = outcome.baseline
    header = "| metric | value |" + (" baseline | change |" if base else "")
    lines += [header, "| --- | --- |" + (" --- | --- |" if base else "")]
    rows = (("sequence accuracy", "accuracy", f"{100 * s.accuracy:.2f}% ({s.correct}/{s.samples})"),
            ("CER", "cer", f"{s.cer:.4f} ({s.char_errors}/{s.chars} characters)"),
            ("WER", "wer", f"{s.wer:.4f} ({s.word_errors}/{s.words} words)"))
    for label, key, value in rows:
        row = f"| {label} | {value} |"
        if base:
            shown = f"{100 * base.metrics[key]:.2f}%" if key == "accuracy" else f"{base.metrics[key]:.4f}"
            row += f" {shown} | {_signed(outcome.deltas[key])} |"
        lines.append(row)
    if report.problems:
        lines += ["", f"{len(report.problems)} labelled entries were skipped (first: {_md_cell(str(report.problems[0]))})."]

    if outcome.gates:
        lines += ["", "### Gates", "", "| gate | measured | limit | result |", "| --- | --- | --- | --- |"]
        for g in outcome.gates:
            lines.append(f"| `{g.name}` | {fmt(g.measured)} | {fmt(g.limit)} | {'✅ pass' if g.passed else '❌ FAIL'} |")
        for g in outcome.failed:
            lines.append(f"\n- {_md_cell(g.message)}")
    for warning in outcome.warnings:
        lines += ["", f"> **Note:** {_md_cell(warning)}"]

    wrong = wrong_samples(report)
    shown = wrong[:worst]
    if shown:
        title = f"### The {len(shown)} worst samples" + (f" (of {len(wrong)} wrong)" if len(wrong) > len(shown) else "")
        lines += ["", title, "", "| image | expected | predicted | errors | confidence |",
                  "| --- | --- | --- | --- | --- |"]
        for r in shown:
            lines.append(f"| {_md_code(display_path(r.path, report.data))} | {_md_code(r.expected)} | "
                         f"{_md_code(r.predicted)} | {r.errors} | {r.confidence:.3f} |")
    else:
        lines += ["", "Every sample was read correctly."]
    return "\n".join(lines) + "\n"
