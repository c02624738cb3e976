"""End to end in a real headless Chromium: the HTML report and the Dagster UI as a user sees them.

One test runs ``neuro-pipeline run`` on the tiny analysis (conftest: random BERT, CoNLL-U),
then

1. loads the HTML report (its path read from the ``reports`` table) with ``--dump-dom``
   and checks that every section in :data:`EXPECTED_SECTIONS` is there with real numbers,
   and takes screenshots of it: ``report.png`` (the first 1280×2400 px) and
   ``report_full.png`` (the whole page);
2. starts ``neuro-pipeline ui`` on 127.0.0.1 and checks through GraphQL that every asset
   check passed and that ``evaluation_report`` was materialized with numeric metadata
   that matches the report;
3. loads three Dagster pages in the browser (its scripts get 15 s of virtual time), takes
   a screenshot of each and checks the rendered DOM: the global lineage
   (``/asset-groups``, the groups), the group's lineage (``/locations/<loc>/asset-groups/
   <group>/lineage``, full asset cards) and the lineage of ``evaluation_report`` in both
   directions (``/assets/evaluation_report?view=lineage&lineageScope=neighbors``), which
   must name every asset connected to the report.

Screenshots go to ``$NEURO_SCREENSHOTS`` when set, otherwise to the test's tmp folder:
``NEURO_SCREENSHOTS=/tmp/neuro_screenshots pytest tests/pipeline/test_browser.py``.

Needs Chromium: when it is missing the test installs it with ``apt-get install -y chromium``
if it runs as root (as CI does), and is skipped, saying why, only when that fails. It
takes about 1.5 minutes on 2 cores, most of it the pipeline run (plus the install once).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.pipeline.browser import (
    dump_dom,
    ensure_chromium,
    full_page_screenshot,
    page_sections,
)
from tests.pipeline.dagster_ui import graphql, wait_for_ui

CLI = [sys.executable, "-m", "neuro_pipeline.cli"]

_PERCENT = r"\d{1,3}(?:\.\d+)?%"
_ACCURACY = _PERCENT + r"(?: ± \d+(?:\.\d+)?)?"  # random draws add "± std"
_COUNT = r"\d[\d,]*"
_NEURON = r"L\d+:\d+"  # layer:unit

# The <h2> sections the report must have (a heading matches when it starts with the text
# given here). Each maps column-name patterns of the section's first table to the pattern
# every cell of those columns must match; "–" (not computed) is allowed but not in every
# row. Extend this when the report grows a section.
EXPECTED_SECTIONS: dict[str, dict[str, str]] = {
    "Probe accuracy with selected neurons": {"neurons": _PERCENT, "k": _COUNT, "top|random|bottom": _ACCURACY},
    "Agreement between methods": {r"top \d+": r"[01]\.\d\d"},
    "Strongest neurons and their top words": {"neuron": _NEURON, "top words": r"\S.*"},
    "Redundancy": {"layer|neurons|constant|clusters|independent|largest cluster": _COUNT},
    "Per class": {"support": _COUNT, "accuracy": _PERCENT},
    "Selectivity (control task)": {"k": _COUNT, "task|control task": _PERCENT, r"selectivity \(points\)": r"-?\d+\.\d"},
    "One probe per layer": {"layer": _COUNT, "accuracy|control task": _PERCENT},
    "Where the top neurons are": {r"L\d+": _COUNT},
    "Ablation at the probe": {"k": _COUNT, "keep, retrained|keep, rest zeroed|remove, zeroed": _PERCENT},
    "Fewest neurons per class": {"target F1|full-probe F1": r"[01]\.\d{3}"},
    "Confusion matrix of the full probe": {},
}
_BROKEN = re.compile(r"\b(nan|NaN|None|inf|undefined|null)\b")

REPORT_WINDOW = (1280, 2400)
UI_WINDOW = (1600, 1400)
JS_BUDGET_MS = 15000  # virtual time for the Dagster UI's scripts to fetch and lay out the graph

@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium, installed with apt-get on first use when missing (CI runs as root);
    the test is skipped, saying why, only when that is impossible."""
    path, what = ensure_chromium()
    if path is None:
        pytest.skip(f"needs headless Chromium: {what}")
    return path






@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NEURO_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _report_path(store: Path) -> Path:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.sql("SELECT html_path FROM reports ORDER BY created_at DESC LIMIT 1").fetchall()
    assert rows, f"no row in the reports table of {store}"
    return Path(rows[0][0])


def _connected(nodes: list[dict], start: list[str]) -> set[tuple[str, ...]]:
    """Asset keys upstream or downstream of ``start`` (transitively), ``start`` included."""
    edges = {tuple(n["assetKey"]["path"]): ([tuple(k["path"]) for k in n["dependencyKeys"]],
                                            [tuple(k["path"]) for k in n["dependedByKeys"]]) for n in nodes}
    found = {tuple(start)}
    for direction in (0, 1):
        todo = [tuple(start)]
        while todo:
            for key in edges.get(todo.pop(), ([], []))[direction]:
                if key not in found:
                    found.add(key)
                    todo.append(key)
    return found


def check_report_dom(dom: str) -> None:
    """Every expected section is present, and its table's columns hold real numbers."""
    sections = page_sections(dom)
    headings = [s.heading for s in sections[1:]]
    for expected, columns in EXPECTED_SECTIONS.items():
        found = [s for s in sections[1:] if s.heading.startswith(expected)]
        assert found, f"section {expected!r} missing from the report; its h2 headings are {headings}"
        section = found[0]
        assert section.tables, f"section {section.heading!r} has no table"
        header, *rows = section.tables[0]
        assert rows, f"the table of {section.heading!r} has a header only: {header}"
        assert all(len(r) == len(header) for r in rows), f"ragged table in {section.heading!r}"
        bad = [c for r in rows for c in r if _BROKEN.search(c)]
        assert not bad, f"the table of {section.heading!r} shows {bad[:5]}"
        for column_pattern, value_pattern in columns.items():
            matched = [i for i, h in enumerate(header) if re.fullmatch(column_pattern, h)]
            assert matched, f"no column {column_pattern!r} in {section.heading!r}: {header}"
            for i in matched:
                values = [r[i] for r in rows]
                wrong = [v for v in values if v != "–" and not re.fullmatch(value_pattern, v)]
                assert not wrong, f"{section.heading!r}, column {header[i]!r}: {wrong[:5]} do not match {value_pattern!r}"
                if value_pattern in (_PERCENT, _ACCURACY):
                    assert all(0 <= float(v.split("%")[0]) <= 100 for v in values if v != "–")
            # A column may be all "–" (no bottom selection for a method that ranks a prefix),
            # but not every column a pattern names.
            assert any(r[i] != "–" for r in rows for i in matched), \
                f"{section.heading!r}, columns {[header[i] for i in matched]} are empty"
    selection = next(s for s in sections if s.heading.startswith("Probe accuracy with selected neurons"))
    assert selection.n_svg >= 1, "the accuracy plot (inline SVG) is missing"


_GOOD_REPORT = """<html><body><h1>Neuron analysis</h1><div><b>93.1%</b>full-probe accuracy</div>
<h2>Probe accuracy with selected neurons</h2><svg><text>0.8</text></svg>
<table><tr><th>method</th><th>neurons</th><th>k</th><th>top</th><th>random</th><th>bottom</th></tr>
<tr><td>probeless</td><td>5%</td><td>5</td><td>92.3%</td><td>71.2% ± 5.4</td><td>–</td></tr></table>
<h2>Agreement between methods</h2><table><tr><th>method</th><th>compared with</th><th>top 10</th></tr>
<tr><td>iou</td><td>probeless</td><td>0.05</td></tr></table>
<h2>Strongest neurons and their top words</h2><table><tr><th>method</th><th>neuron</th><th>top words</th></tr>
<tr><td>iou</td><td>L0:7</td><td>run, and</td></tr></table>
<h2>Redundancy</h2><table><tr><th>layer</th><th>neurons</th><th>constant</th><th>clusters</th><th>independent</th>
<th>largest cluster</th></tr><tr><td>0</td><td>32</td><td>0</td><td>23</td><td>4</td><td>3</td></tr></table>
<h2>Per class</h2><table><tr><th>label</th><th>support</th><th>accuracy</th></tr>
<tr><td>NOUN</td><td>1,204</td><td>100.0%</td></tr></table>
<h2>Selectivity (control task)</h2><table><tr><th>neurons</th><th>k</th><th>task</th><th>control task</th>
<th>selectivity (points)</th></tr><tr><td>all</td><td>96</td><td>90.0%</td><td>70.0%</td><td>20.0</td></tr></table>
<h2>One probe per layer</h2><table><tr><th>layer</th><th>accuracy</th><th>control task</th></tr>
<tr><td>0</td><td>80.0%</td><td>60.0%</td></tr></table>
<h2>Where the top neurons are</h2><table><tr><th>label</th><th>L0</th><th>L1</th></tr>
<tr><td>NOUN</td><td>3</td><td>7</td></tr></table>
<h2>Ablation at the probe</h2><table><tr><th>method</th><th>k</th><th>neurons</th><th>keep, retrained</th></tr>
<tr><td>iou</td><td>10</td><td>top</td><td>88.0%</td></tr></table>
<h2>Fewest neurons per class</h2><table><tr><th>label</th><th>fewest neurons</th><th>target F1</th>
<th>full-probe F1</th></tr><tr><td>NOUN</td><td>8</td><td>0.810</td><td>0.900</td></tr></table>
<h2>Confusion matrix of the full probe</h2><table><tr><th>true \\ predicted</th><th>NOUN</th></tr>
<tr><td>NOUN</td><td>12</td></tr></table></body></html>"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("", "", None),  # the well-formed page passes
        ("<h2>Redundancy</h2>", "<h2>Clusters</h2>", "section 'Redundancy' missing"),
        ("<td>92.3%</td>", "<td>nan%</td>", "shows"),
        ("<td>92.3%</td>", "<td>0.923</td>", "column 'top'"),
        ("<td>1,204</td>", "<td></td>", "column 'support'"),
        ("<td>L0:7</td>", "<td>–</td>", r"columns \['neuron'\] are empty"),
        ("<svg><text>0.8</text></svg>", "", "accuracy plot"),
    ],
)
def test_the_report_checker_catches_missing_sections_and_broken_numbers(old, new, message):
    """The DOM checker itself, on a hand-written page (no browser needed)."""
    dom = _GOOD_REPORT.replace(old, new, 1)
    if message is None:
        check_report_dom(dom)
    else:
        with pytest.raises(AssertionError, match=message):
            check_report_dom(dom)


def test_report_and_dagster_ui_in_headless_chromium(chromium, analysis_dir, screenshots, ui_process):
    started = time.perf_counter()
    config = analysis_dir / "pipeline.yaml"
    home = analysis_dir / "home"
    run = subprocess.run([*CLI, "run", "-c", str(config), "--home", str(home)], cwd=analysis_dir,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The UI boots (about 20 s) while the browser checks the report.
    port = ui_process(["-c", str(config), "--home", str(home)], analysis_dir)

    # 1. The report, as rendered by the browser.
    report = _report_path(analysis_dir / "store" / "pipeline.duckdb")
    assert report.is_file() and str(report) in run.stdout
    dom = dump_dom(report.as_uri(), window_size=REPORT_WINDOW, screenshot_to=screenshots / "report.png")
    check_report_dom(dom)
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", dom), "the report loads something from the network"
    full_page_screenshot(report.as_uri(), screenshots / "report_full.png", width=REPORT_WINDOW[0])

    # 2. The Dagster UI: GraphQL first, then the lineage pages in the browser.
    wait_for_ui(port)
    assert graphql(port, "mutation { setNuxSeen }")["setNuxSeen"]  # no first-use pop-up in the screenshots
    nodes = graphql(port, """{ assetNodes { assetKey { path } groupName repository { location { name } }
        dependencyKeys { path } dependedByKeys { path }
        assetChecksOrError { ... on AssetChecks { checks { name
            executionForLatestMaterialization { status evaluation { success } } } } } } }""")["assetNodes"]
    by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
    assert {"token_activations", "evaluation_report"} <= set(by_name)
    for node in nodes:
        for check in (node["assetChecksOrError"] or {}).get("checks", []):
            latest = check["executionForLatestMaterialization"]
            assert latest and latest["status"] == "SUCCEEDED" and latest["evaluation"]["success"], \
                f"check {check['name']} of {node['assetKey']['path']}: {latest}"
    assert by_name["evaluation_report"]["assetChecksOrError"]["checks"], "evaluation_report has no asset check"

    materialization = graphql(port, """{ assetOrError(assetKey: {path: ["evaluation_report"]}) { ... on Asset {
        assetMaterializations(limit: 1) { metadataEntries { label
            ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue }
            ... on PathMetadataEntry { path } } } } } }""")["assetOrError"]["assetMaterializations"]
    assert len(materialization) == 1
    meta = {e["label"]: next((e[k] for k in ("floatValue", "intValue", "path") if k in e), None)
            for e in materialization[0]["metadataEntries"]}
    assert 0 <= meta["majority_baseline"] < meta["accuracy"] <= 1
    assert meta["n_test_words"] > 0
    assert Path(meta["report_html"]) == report
    # The number in Dagster is the number in the report the user opens.
    kpis = " ".join(page_sections(dom)[0].text)
    assert re.search(rf"{100 * meta['accuracy']:.1f}%\s+full-probe accuracy", kpis), kpis

    node = by_name["evaluation_report"]
    location, group = node["repository"]["location"]["name"], node["groupName"]
    group_names = sorted({n["groupName"] for n in nodes})
    base = f"http://127.0.0.1:{port}"
    page = dump_dom(f"{base}/asset-groups", window_size=UI_WINDOW, budget_ms=JS_BUDGET_MS,
                    screenshot_to=screenshots / "lineage_global.png")
    assert "Global asset lineage" in page and all(g in page for g in group_names), \
        f"the global lineage page does not show the groups {group_names}"
    # The group's graph draws full asset cards at a readable zoom and renders only the
    # cards inside the viewport, so only "some of the group" can be asserted here.
    page = dump_dom(f"{base}/locations/{location}/asset-groups/{group}/lineage", window_size=UI_WINDOW,
                    budget_ms=JS_BUDGET_MS, screenshot_to=screenshots / "lineage_group.png")
    assert any(name in page for name, n in by_name.items() if n["groupName"] == group), \
        f"the lineage graph of group {group!r} shows none of its assets"
    # The report's lineage, all the way up and down, is zoomed to fit: every asset it
    # depends on or that depends on it is named in the page.
    connected = _connected(nodes, ["evaluation_report"])
    page = dump_dom(f"{base}/assets/evaluation_report?view=lineage&lineageScope=neighbors&lineageDepth={len(nodes)}",
                    window_size=UI_WINDOW, budget_ms=JS_BUDGET_MS, screenshot_to=screenshots / "lineage_report.png")
    missing = sorted(path[-1] for path in connected if path[-1] not in page)
    assert not missing, f"the lineage of evaluation_report does not show {missing}"
    assert {("token_activations",), ("annotated_corpus",)} <= connected

    for name in ("report.png", "report_full.png", "lineage_global.png", "lineage_group.png", "lineage_report.png"):
        assert (screenshots / name).stat().st_size > 10_000, f"{name} looks blank"
    print(f"screenshots in {screenshots}; {time.perf_counter() - started:.0f} s")
