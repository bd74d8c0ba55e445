"""Evaluation gates, baselines and the CI reports (JSON, JUnit, Markdown, HTML), through the CLI.

A good model (the bundled codes-small) and a deliberately degraded one (crnn-tiny trained for
one optimiser step) are evaluated on a handful of sample images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from PIL import Image
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLE
from test_cli import crnn

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "ci-evaluation.yml"
HANDFUL = 12  # the first 12 sample validation images; codes-small reads all of them right


@pytest.fixture(scope="module")
def handful(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("handful")
    lines = (SAMPLE / "codes" / "val" / "labels.tsv").read_text(encoding="utf-8").splitlines()[:HANDFUL]
    for line in lines:
        shutil.copy(SAMPLE / "codes" / "val" / line.split("\t")[0], folder)
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def degraded(tiny_data, tmp_path_factory) -> Path:
    """crnn-tiny after a single step: 48 training images in one batch of 64, one epoch."""
    run = tmp_path_factory.mktemp("degraded") / "run"
    result = crnn("train", tiny_data, "--model", "crnn-tiny", "--epochs", "1", "--batch-size", "64", "--out", run)
    assert result.returncode == 0, result.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    return run / "best.pt"


def test_cli_training_drew_curves(degraded):
    with Image.open(degraded.parent / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1200, 360)


def run_eval(model, data, out: Path, *gates: str) -> tuple[subprocess.CompletedProcess, Path]:
    out.mkdir(parents=True, exist_ok=True)
    result = crnn("eval", model, data, *gates, "--json", out / "report.json", "--per-sample",
                  "--junit", out / "junit.xml", "--markdown", out / "summary.md", "--html", out / "report.html")
    return result, out


@pytest.fixture(scope="module")
def good_eval(handful, tmp_path_factory):
    return run_eval("codes-small", handful, tmp_path_factory.mktemp("good"), "--min-accuracy", "0.9", "--max-cer", "0.05")


@pytest.fixture(scope="module")
def bad_eval(degraded, handful, good_eval, tmp_path_factory):
    """The degraded model, with the same gates and the good model's report as the baseline."""
    baseline = good_eval[1] / "report.json"
    return run_eval(degraded, handful, tmp_path_factory.mktemp("bad"), "--min-accuracy", "0.9", "--max-cer", "0.05",
                    "--baseline", baseline, "--max-regression", "0.02")


def gate_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("crnn: gate failed: ")]


def test_good_model_passes_the_gates(good_eval):
    result, out = good_eval
    assert result.returncode == 0, result.stderr
    assert gate_lines(result.stderr) == []
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == 2 and report["passed"] is True
    assert report["accuracy"] == 1.0 and report["samples"] == HANDFUL
    assert [(g["name"], g["passed"], g["limit"]) for g in report["gates"]] == [
        ("min-accuracy", True, 0.9), ("max-cer", True, 0.05)]
    assert report["baseline"] is None


def test_degraded_model_fails_every_gate_with_one_line_each(bad_eval):
    result, out = bad_eval
    assert result.returncode == 1
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["accuracy"] < 0.9 and report["cer"] > 0.05
    lines = gate_lines(result.stderr)
    assert len(lines) == 4, result.stderr  # min-accuracy, max-cer, accuracy drop, CER rise
    assert f"accuracy {report['accuracy']:.6g} is below the minimum 0.9" in lines[0]
    assert f"CER {report['cer']:.6g} is above the maximum 0.05" in lines[1]
    assert "--max-regression 0.02" in lines[2] and "--max-regression 0.02" in lines[3]
    assert "Traceback" not in result.stderr
    # Every report is written even though the gates failed: CI needs them most then.
    assert all((out / name).stat().st_size > 0 for name in ("junit.xml", "summary.md", "report.html"))


def test_baseline_deltas(bad_eval, good_eval):
    good = json.loads((good_eval[1] / "report.json").read_text())
    bad = json.loads((bad_eval[1] / "report.json").read_text())
    base = bad["baseline"]
    assert base["path"].endswith("report.json") and base["max_regression"] == 0.02
    for key in ("accuracy", "cer", "wer"):
        assert base[key] == good[key]
        assert base["deltas"][key] == pytest.approx(bad[key] - good[key])
    drop, rise = (g for g in bad["gates"] if g["name"] in ("max-accuracy-drop", "max-cer-rise"))
    assert drop["measured"] == pytest.approx(good["accuracy"] - bad["accuracy"]) and not drop["passed"]
    assert rise["measured"] == pytest.approx(bad["cer"] - good["cer"]) and not rise["passed"]
    assert "against baseline" in bad_eval[0].stdout  # the deltas are shown under the table


def test_same_model_against_its_own_baseline_passes(good_eval, handful, tmp_path):
    result = crnn("eval", "codes-small", handful, "--baseline", good_eval[1] / "report.json", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["baseline"]["deltas"] == {"accuracy": 0.0, "cer": 0.0, "wer": 0.0}
    assert [g["passed"] for g in report["gates"]] == [True, True]


def test_bad_baselines_are_one_line_errors(handful, tmp_path):
    missing = crnn("eval", "codes-small", handful, "--baseline", tmp_path / "nope.json")
    assert missing.returncode == 1 and missing.stderr.strip() == f"crnn: error: {tmp_path / 'nope.json'}: baseline report not found"
    other = tmp_path / "other.json"
    other.write_text('{"accuracy": 1}')
    wrong = crnn("eval", "codes-small", handful, "--baseline", other)
    assert wrong.returncode == 1 and "not a crnn eval report" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    usage = crnn("eval", "codes-small", handful, "--min-accuracy", "1.5")
    assert usage.returncode == 2
    alone = crnn("eval", "codes-small", handful, "--max-regression", "0.01")
    assert alone.returncode == 2 and "needs --baseline" in alone.stderr


def test_json_character_counts_and_confusions_add_up(bad_eval):
    report = json.loads((bad_eval[1] / "report.json").read_text())
    chars = report["characters"]
    assert sum(c["expected"] for c in chars) == report["chars"]
    assert sum(c["substituted"] + c["deleted"] + c["inserted"] for c in chars) == report["char_errors"]
    assert all(c["correct"] + c["substituted"] + c["deleted"] == c["expected"] for c in chars)
    assert sum(c["count"] for c in report["confusions"]) == report["char_errors"]
    assert len(report["per_sample"]) == HANDFUL
    expected_text = "".join(s["expected"] for s in report["per_sample"])
    for c in chars:
        assert c["expected"] == expected_text.count(c["char"])


def test_junit_has_a_case_per_gate_and_the_failed_samples(bad_eval, good_eval):
    root = ET.parse(bad_eval[1] / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"gates", "samples"}
    gates = suites["gates"].findall("testcase")
    assert [c.get("name") for c in gates] == ["min-accuracy", "max-cer", "max-accuracy-drop", "max-cer-rise"]
    assert all(c.find("failure") is not None for c in gates)
    report = json.loads((bad_eval[1] / "report.json").read_text())
    wrong = report["samples"] - report["correct"]
    samples = suites["samples"].findall("testcase")
    assert len(samples) == wrong == int(suites["samples"].get("failures"))
    assert int(root.get("failures")) == 4 + wrong

    good_root = ET.parse(good_eval[1] / "junit.xml").getroot()
    good_gates = [s for s in good_root.iter("testsuite") if s.get("name") == "gates"][0]
    assert good_gates.get("failures") == "0" and len(good_gates.findall("testcase")) == 2


def test_junit_caps_the_samples_suite(handful):
    from crnn_core.evaluate import Report, SampleResult
    from crnn_core.gates import check
    from crnn_core.metrics import Scores
    from crnn_core.reports import junit_xml

    results = [SampleResult(f"{handful}/x{i}.png", "AB\x01C", "A", 0.5, 2) for i in range(30)]
    report = Report("m.pt", str(handful), Scores(samples=30, chars=90, char_errors=60), 1.0, results)
    root = ET.fromstring(junit_xml(report, check({"accuracy": 0.0, "cer": 0.6, "wer": 1.0}, 30, str(handful)),
                                   max_samples=5))
    samples = [s for s in root.iter("testsuite") if s.get("name") == "samples"][0]
    assert len(samples.findall("testcase")) == 5
    assert "25 more are not" in samples.find("system-out").text
    assert "\ufffd" in samples.find("testcase/failure").get("message")  # a control character made XML-safe


def test_markdown_summary(bad_eval, good_eval):
    text = (bad_eval[1] / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("## ❌ crnn eval: 4 of 4 gates failed")
    assert "| metric | value | baseline | change |" in text
    assert "| `min-accuracy` |" in text and "❌ FAIL" in text
    assert "### The 10 worst samples (of 12 wrong)" in text
    worst_rows = [line for line in text.split("### The 10 worst samples")[1].splitlines() if line.startswith("| `")]
    assert len(worst_rows) == 10
    good = (good_eval[1] / "summary.md").read_text(encoding="utf-8")
    assert good.startswith("## ✅ crnn eval: all 2 gates passed") and "Every sample was read correctly." in good


def test_example_workflow_gates_a_degraded_model(degraded, handful, tmp_path):
    """The workflow's own eval commands: the good model passes (then with its report as baseline), the degraded one fails."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers
    job = workflow["jobs"]["evaluate"]
    steps = {s.get("id"): s for s in job["steps"]}
    script = steps["eval"]["run"]
    uses = " ".join(s.get("uses", "") for s in job["steps"])
    assert "action-junit-report" in uses and "GITHUB_STEP_SUMMARY" in WORKFLOW.read_text()
    env = dict(os.environ, **{k: str(v) for k, v in job["env"].items()})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this venv's crnn
    env["EVAL_DATA"] = str(handful)

    def run(model: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=dict(env, CRNN_MODEL=model),
                              capture_output=True, text=True, timeout=300)

    first = run("codes-small")  # no baseline yet
    assert first.returncode == 0, first.stderr
    baseline = tmp_path / env["BASELINE"]
    baseline.parent.mkdir(parents=True)
    shutil.copy(tmp_path / env["OUT"] / "report.json", baseline)  # the workflow's "next baseline" step
    again = run("codes-small")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / env["OUT"] / "report.json").read_text())["baseline"] is not None
    bad = run(str(degraded))
    assert bad.returncode == 1
    assert len(gate_lines(bad.stderr)) == 4
    assert (tmp_path / env["OUT"] / "summary.md").read_text().startswith("## ❌")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, timeout=120)


@pytest.mark.skipif(chromium() is None and os.environ.get("CI") != "true",
                    reason="Chromium is not installed (.ci/run installs it)")
def test_html_report_renders_in_headless_chromium(bad_eval, tmp_path):
    page = (bad_eval[1] / "report.html").resolve()
    assert "src=\"http" not in page.read_text() and "href=\"http" not in page.read_text()  # self-contained
    browser = chromium()
    assert browser is not None, "CI=true but Chromium is not installed"
    dom = headless(browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    report = json.loads((bad_eval[1] / "report.json").read_text())
    wrong = report["samples"] - report["correct"]
    assert html.count('<figure class="error"') == wrong == 12
    # Set by the page's script after load: gallery images that the browser actually decoded.
    assert f'data-images-rendered="{wrong}"' in html
    assert 'class="broken"' not in html and "img broken" not in html

    shot = tmp_path / "shot.png"
    done = headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,3200", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr.decode(errors="replace")[-2000:]
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # not a blank page
    counts = {rgb: n for n, rgb in colours}
    # The degraded model reads (almost) nothing: the expected text is marked missing (--del #ef476f).
    assert counts.get((0xEF, 0x47, 0x6F), 0) > 200


def test_html_highlights_the_differing_characters():
    from crnn_core.report_html import highlighted

    expected, predicted = highlighted("F 743T", "F Z43")
    assert expected == 'F <mark class="sub">7</mark>43<mark class="del">T</mark>'
    assert predicted == 'F <mark class="sub">Z</mark>43'
    assert highlighted("<b>", "") == ('<mark class="del">&lt;b&gt;</mark>', '<span class="none">(nothing)</span>')
    assert highlighted("AB", "AXB")[1] == 'A<mark class="ins">X</mark>B'


def test_html_of_a_perfect_run(good_eval):
    page = (good_eval[1] / "report.html").read_text(encoding="utf-8")
    assert 'data-items="0"' in page and "Every sample was read correctly." in page
    assert "all 2 gates passed" in page


@settings(max_examples=200, deadline=None)
@given(st.text("ab c", max_size=8), st.text("abd c", max_size=8))
def test_alignment_covers_both_texts(expected, predicted):
    from rapidfuzz.distance import Levenshtein

    from crnn_core.confusion import EQUAL, align, analyse

    ops = align(expected, predicted)
    assert "".join(e for _, e, _ in ops) == expected
    assert "".join(p for _, _, p in ops) == predicted
    assert sum(op != EQUAL for op, _, _ in ops) == Levenshtein.distance(expected, predicted)
    assert all(e == p for op, e, p in ops if op == EQUAL)
    analysis = analyse([(expected, predicted)])
    assert sum(analysis.confusions.values()) == Levenshtein.distance(expected, predicted)


def test_gate_limits_are_inclusive_and_float_noise_does_not_fail():
    from crnn_core.gates import Baseline, check

    outcome = check({"accuracy": 0.95, "cer": 0.01, "wer": 0.1}, 100, "d", min_accuracy=0.95, max_cer=0.01)
    assert outcome.passed
    base = Baseline("b.json", {"accuracy": 0.1 + 0.2, "cer": 0.3, "wer": 0.0}, 100, "d", "m")
    outcome = check({"accuracy": 0.3, "cer": 0.1 + 0.2, "wer": 0.0}, 100, "d", baseline=base)
    assert outcome.passed and [g.name for g in outcome.gates] == ["max-accuracy-drop", "max-cer-rise"]
    worse = check({"accuracy": 0.29, "cer": 0.3, "wer": 0.0}, 90, "e", baseline=base, max_regression=0.005)
    assert not worse.passed and [g.name for g in worse.failed] == ["max-accuracy-drop"]
    assert len(worse.warnings) == 2  # different sample count and data
