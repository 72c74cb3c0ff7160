"""End to end through the UI: `dagster dev` on the bundled sample, driven by a real headless Chromium.

The browser opens the asset graph (every asset, their lineage, descriptions, owners, column
descriptions), sees the class partitions the sensor registered, launches the materialization of every
asset for one class from the "Materialize all…" dialog, follows the run to success (the waiting polls
GraphQL; what is checked is read in the browser), reads the progress lines in the run's logs, then
opens the PCA materialization: runtime, explained variance and the scree plot. A second test launches a
backfill of every asset and every class from the same dialog (*All*) and checks that Dagster runs it as one run
and that each class's partition shows its own figures.

Screenshots go to `test-artifacts/browser/` (or $FRUITS_TEST_ARTIFACTS), with the `dagster dev` log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from dagster import DagsterInstance

from fruits_platform_tests.dagster_dev import running_dagster_dev
from fruits_platform_tests.helpers import REPO, SAMPLE_CLASSES, SAMPLE_ROOT

CHROMIUM = os.getenv("FRUITS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium's own background connections are refused en masse on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET = "pca_features"  # materialized with everything upstream of it
CORE_ASSETS = ["raw_images", "mobilenet_features", "feature_model", "scaled_features", "pca_features"]
GROUP = "fruit_features"
LOCATION = "fruits_platform"
CLASS = "Apple Braeburn"  # 12 Training + 4 Test images: enough for feature_model to fit on its own
CLASS_IMAGES = sum(1 for split in ("Training", "Test") for _ in (SAMPLE_ROOT / split / CLASS).iterdir())
RUN_TIMEOUT = 300  # seconds; the run takes ~80 s on 2 busy cores
LAUNCH_BUTTON = re.compile(r"^Launch (1 run|backfill)$")

try:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a loaded 2-core CI machine renders slowly
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(480),
    pytest.mark.skipif(sync_playwright is None, reason="the `playwright` Python package is not installed"),
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set FRUITS_TEST_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.getenv("FRUITS_TEST_ARTIFACTS", REPO / "test-artifacts" / "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


@pytest.fixture
def dagster_dev(tmp_path, real_weights_path, artifacts, request):
    """`dg dev` on the bundled sample, a fresh DAGSTER_HOME and output root, the real weights."""
    env = {
        "FRUITS_OUTPUT_ROOT": str(tmp_path / "output"),
        "FRUITS_WEIGHTS": real_weights_path,
        "FRUITS_DEPLOYMENT": "local",
        # Everything else at its default, whatever the developer's shell exports.
        **{
            name: None
            for name in (
                "FRUITS_DATA_ROOT",
                "FRUITS_IMAGE_SIZE",
                "FRUITS_PCA_K",
                "FRUITS_PCA_VARIANCE",
                "FRUITS_AUTOMATION",
            )
        },
    }
    log_path = tmp_path / "dagster_dev.log"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No "Join the Dagster community" modal: it opens a second after the first page load, over any dialog.
    (home / "dagster.yaml").write_text("nux:\n  enabled: false\n")
    try:
        with running_dagster_dev(home, env, log_path=log_path) as server:
            yield server
    finally:
        if log_path.exists():
            shutil.copy(log_path, artifacts / f"dagster_dev_{request.node.name}.log")


def squash(text: str) -> str:
    """Markdown-rendered text compared with its source: no backticks, single spaces."""
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def section(text: str, start: str, end: str) -> set[str]:
    """The lines between two headings of an asset's overview page (e.g. its upstream assets)."""
    block = text.split(start, 1)[1].split(end, 1)[0]
    return {line.strip() for line in block.splitlines() if line.strip() and line.strip() != "–"}


def metadata_value(page, key: str) -> str:
    """The value cell of a metadata row of the partition's materialization."""
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True)).first
    expect(row).to_be_visible()
    return row.locator("td").nth(1).inner_text().strip()


@contextmanager
def browser_page(failure_shots: Path):
    """Headless Chromium: (context, a first page); on an error, a screenshot of every open page to
    `failure_shots`_<n>.png."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1800, "height": 1000})
        context.set_default_timeout(30_000)
        page = context.new_page()
        try:
            yield context, page
        except Exception:
            for number, open_page in enumerate(context.pages):
                open_page.screenshot(path=f"{failure_shots}_{number}.png")
            raise
        finally:
            browser.close()


def open_launch_dialog(page):
    """*Materialize all…* once the button is done loading (a click while it loads opens nothing); the dialog."""
    button = page.get_by_role("button", name="Materialize all…")
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    for _ in range(3):
        expect(button.get_by_role("progressbar")).to_have_count(0, timeout=60_000)
        button.click()
        try:
            expect(dialog).to_be_visible(timeout=10_000)
            return dialog
        except AssertionError:
            continue
    expect(dialog).to_be_visible()
    return dialog


def wait_for_partitions(page, url: str) -> None:
    """Until the sensor's first tick has registered the sample's class folders as partitions."""
    page.goto(f"{url}/assets/raw_images?view=partitions")
    deadline = time.monotonic() + 120
    while True:  # each check waits for the page to render before reloading
        try:
            expect(page.get_by_text(SAMPLE_CLASSES[-1], exact=True).first).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            assert time.monotonic() < deadline, "the sensor registered no partition within 120 s"
            page.reload()


def test_ui_end_to_end(dagster_dev, artifacts):
    from dagster import AssetKey

    from fruits_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    assert set(CORE_ASSETS) <= set(assets)
    chain, todo = set(), [AssetKey(TARGET)]  # TARGET and everything upstream of it
    while todo:
        key = todo.pop()
        if key.to_user_string() not in chain:
            chain.add(key.to_user_string())
            todo.extend(graph.get(key).parent_keys)
    started = time.monotonic()
    with browser_page(artifacts / "failure") as (context, page):

        def shot(name: str, full_page: bool = False, target=None):
            (target or page).screenshot(path=str(artifacts / f"{name}.png"), full_page=full_page)

        # 1. The asset graph of the group: every asset and its kinds, edges drawn.
        page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/{GROUP}/lineage")
        expect(page.get_by_text("Asset Group in")).to_be_visible()
        for name in assets:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()

        # 2. The partitions: the sensor registers the sample's class folders on its first tick.
        wait_for_partitions(page, dagster_dev.url)
        expect(page.get_by_text(f"Missing ({len(SAMPLE_CLASSES)})")).to_be_visible()
        for name in SAMPLE_CLASSES:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        shot("02_partitions")

        # Graph screenshot once partitions exist (the nodes then show "0/6" partition counts).
        page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/{GROUP}/lineage")
        for name in assets:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        expect(page.get_by_text("Loading...")).to_have_count(0)
        shot("01_asset_graph")

        # 3. Launch: filter the graph to pca_features and its upstream ("+key:pca_features"), then
        # "Materialize all…" -> the partition selector -> one class -> Launch.
        search = page.locator(".CodeMirror:visible").first
        query = f"+key:{TARGET}"
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        for _ in range(3):  # the filter's autocomplete can swallow keystrokes: paste, type, check, retry
            search.click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Backspace")
            page.keyboard.insert_text(query[:-1])
            page.keyboard.type(query[-1], delay=100)
            page.wait_for_timeout(500)
            page.keyboard.press("Enter")
            page.wait_for_timeout(1_500)
            page.get_by_role("button", name="Materialize all…").click()
            expect(dialog).to_be_visible()
            if f"materialize {len(chain)} assets" in dialog.inner_text():
                break
            dialog.get_by_role("button", name="Cancel").click()
        expect(search).to_contain_text(query)
        expect(dialog).to_contain_text(f"materialize {len(chain)} assets")
        dialog.get_by_text("Select a partition or create one").click()
        # The selector also renders each key in a hidden element that measures it for truncation:
        # click the one shown.
        page.get_by_text(CLASS, exact=True).filter(visible=True).first.click()
        page.keyboard.press("Escape")  # closes the selector's popover, not the dialog
        expect(dialog).to_contain_text("1 partition")
        shot("03_launch_dialog")
        dialog.get_by_role("button", name=LAUNCH_BUTTON).click()
        toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
        expect(toast).to_be_visible()
        short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
        # The toast fades quickly: follow the run from the graph, whose nodes link the running run
        # (in a new tab).
        graph_page = page
        with context.expect_page() as opened:
            graph_page.get_by_role("link", name=short_id).first.click()
        page = opened.value
        page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]{{28}}"))
        graph_page.close()
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
        expect(page.get_by_text(f"partition: {CLASS}")).to_be_visible()

        # 4. While it runs: each asset's page explains it (description, group, owner, columns, lineage).
        guide = context.new_page()
        for name in assets:
            node = graph.get(AssetKey(name))
            guide.goto(f"{dagster_dev.url}/assets/{name}?view=overview")
            expect(guide.get_by_text("Upstream assets")).to_be_visible()
            expect(guide.get_by_text(GROUP, exact=True).first).to_be_visible()
            # Sections render one after another: wait for each expected piece, then read the page.
            body = guide.locator("body")
            expect(body).to_contain_text(squash(node.description)[:120])  # a long one may be folded
            for owner in node.owners:
                expect(body).to_contain_text(owner.split(":", 1)[-1])
            schema = node.metadata.get("dagster/column_schema")
            for column in schema.columns if schema else []:
                expect(body).to_contain_text(squash(column.description))
            for neighbour in [*node.parent_keys, *node.child_keys]:
                expect(body).to_contain_text(neighbour.to_user_string())
            text = body.inner_text()
            (artifacts / f"overview_{name}.txt").write_text(text)
            upstream = section(text, "Upstream assets", "Downstream assets")
            downstream = section(text, "Downstream assets", "Definition")
            assert upstream == {k.to_user_string() for k in node.parent_keys}, (name, upstream)
            assert downstream == {k.to_user_string() for k in node.child_keys}, (name, downstream)
            if name == TARGET:
                shot("04_pca_features_overview", full_page=True, target=guide)
        guide.close()

        # 5. Wait for the run (GraphQL), then see its outcome and progress logs in the UI.
        query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
        status = dagster_dev.wait_until(
            lambda: (
                (s := dagster_dev.graphql(query, {"id": run_id})["runOrError"]["status"])
                in {"SUCCESS", "FAILURE", "CANCELED"}
                and s
            ),
            timeout=RUN_TIMEOUT,
            interval=2,
            what=f"run {run_id}",
        )
        page.reload()
        if status != "SUCCESS":
            shot("failure_run")
        assert status == "SUCCESS", f"run {run_id} ended {status}: see failure_run.png and dagster_dev.log"
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        page.get_by_placeholder("Filter").fill("files:")  # the catalogue and embedding pass, one read per file
        progress = page.get_by_text(re.compile(rf"files: \d+/{CLASS_IMAGES} done"))
        expect(progress.first).to_be_visible()
        expect(page.get_by_text(f"files: {CLASS_IMAGES}/{CLASS_IMAGES} done in")).to_be_visible()
        shot("05_run_progress_logs")

        # 6. The graph again, now with the materialized class.
        page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/{GROUP}/lineage")
        expect(page.get_by_text(TARGET, exact=True).first).to_be_visible()
        expect(page.get_by_text("Loading...")).to_have_count(0)
        page.wait_for_timeout(1_000)
        shot("06_asset_graph_materialized")

        # 7. The materialization of the class: runtime, explained variance, scree plot.
        page.goto(f"{dagster_dev.url}/assets/pca_features?view=partitions&partition={quote(CLASS)}")
        expect(page.get_by_text("Materialized (1)")).to_be_visible()
        expect(page.get_by_text("scree_plot", exact=True)).to_be_visible()
        runtime = float(metadata_value(page, "runtime_seconds"))
        k = int(metadata_value(page, "pca_k"))
        total = float(metadata_value(page, "explained_variance_total"))
        rows = int(metadata_value(page, "dagster/row_count"))
        assert runtime > 0 and rows == CLASS_IMAGES
        assert 0 < total <= 1 and k >= 1
        assert total >= 0.95 - 1e-6, f"default threshold 0.95 not reached: {total}"
        shot("07_pca_metadata", full_page=True)
        page.get_by_text("[Show Markdown]").click()
        plot = page.get_by_role("dialog").locator("img[alt='PCA scree plot']")
        expect(plot).to_be_visible()
        assert plot.evaluate("img => img.complete && img.naturalWidth > 100")
        shot("08_pca_scree_plot")
        page.get_by_role("button", name="Close").click()

        # The embedding step too: runtime and throughput of the class.
        page.goto(f"{dagster_dev.url}/assets/mobilenet_features?view=partitions&partition={quote(CLASS)}")
        expect(page.get_by_text("images_embedded", exact=True)).to_be_visible()
        assert float(metadata_value(page, "runtime_seconds")) > 0
        assert float(metadata_value(page, "throughput_images_per_second")) > 0
        assert int(metadata_value(page, "images_embedded")) == CLASS_IMAGES
        shot("09_mobilenet_features_metadata", full_page=True)
    print(f"browser test: {time.monotonic() - started:.0f}s in the browser, screenshots in {artifacts}")


BACKFILL_QUERY = """query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status assetSelection { path } } }
  }
}"""
BACKFILL_TIMEOUT = 420  # seconds; one run of every asset over the 96 images, ~150 s on 2 busy cores


@pytest.mark.timeout(720)
def test_ui_backfill_of_every_class_is_one_run(dagster_dev, artifacts):
    """*Materialize all…* → *All* partitions → *Launch backfill*: Dagster plans one run of all the assets (one
    process, one SparkSession) with no warning on the terminal, and each class's partition shows its own figures."""
    from fruits_platform.definitions import defs

    assets = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    with browser_page(artifacts / "failure_backfill") as (_context, page):
        wait_for_partitions(page, dagster_dev.url)
        page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/{GROUP}/lineage")
        for name in assets:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        dialog = open_launch_dialog(page)
        expect(dialog).to_contain_text(f"materialize {len(assets)} assets")
        dialog.get_by_role("button", name="All", exact=True).click()
        expect(dialog).to_contain_text(f"{len(SAMPLE_CLASSES)} partitions")
        page.screenshot(path=str(artifacts / "10_backfill_dialog.png"))
        dialog.get_by_role("button", name=LAUNCH_BUTTON).click()
        expect(dialog).to_have_count(0)

        listed = "query { partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }"
        backfill_id = dagster_dev.wait_until(
            lambda: dagster_dev.graphql(listed)["partitionBackfillsOrError"]["results"][0]["id"],
            timeout=30,
            what="the backfill",
        )

        def finished():
            data = dagster_dev.graphql(BACKFILL_QUERY, {"id": backfill_id})
            status = data["partitionBackfillOrError"]["status"]
            return status not in {"REQUESTED", "CANCELING"} and data

        data = dagster_dev.wait_until(finished, timeout=BACKFILL_TIMEOUT, interval=3, what=f"backfill {backfill_id}")
        runs = data["runsOrError"]["results"]
        page.goto(f"{dagster_dev.url}/runs/b/{backfill_id}?tab=runs")
        expect(page.get_by_text(backfill_id).first).to_be_visible()
        page.screenshot(path=str(artifacts / "11_backfill_runs.png"))
        assert data["partitionBackfillOrError"]["status"] == "COMPLETED_SUCCESS", (data, dagster_dev.log_tail())
        assert len(runs) == 1, f"the backfill ran as {len(runs)} runs: {runs}"
        # The README's first run: neither `dg dev`'s terminal nor the run's log holds a warning (docs/failure-modes.md).
        terminal = dagster_dev.log_path.read_text(errors="replace").splitlines()
        assert [line for line in terminal if "WARN" in line or "Warning" in line] == []
        with DagsterInstance.from_config(str(dagster_dev.home)) as instance:
            entries = instance.all_logs(runs[0]["runId"])
        assert [entry.message for entry in entries if entry.level >= logging.WARNING] == []
        assert {"/".join(a["path"]) for a in runs[0]["assetSelection"]} == set(assets)

        # Each class's partition carries its own counts, not the run's totals.
        page.goto(f"{dagster_dev.url}/assets/mobilenet_features?view=partitions&partition={quote(CLASS)}")
        expect(page.get_by_text("images_embedded", exact=True)).to_be_visible()
        assert int(metadata_value(page, "dagster/row_count")) == CLASS_IMAGES
        assert int(metadata_value(page, "images_embedded")) == CLASS_IMAGES
        page.goto(f"{dagster_dev.url}/assets/feature_quality?view=partitions&partition={quote(CLASS)}")
        expect(page.get_by_text("accuracy_logreg_pca", exact=True)).to_be_visible()
        assert 0 <= float(metadata_value(page, "class_accuracy_logreg_pca")) <= 1
        page.screenshot(path=str(artifacts / "12_feature_quality_partition.png"), full_page=True)
