"""What a reviewer sees in a browser after a real pipeline run: `flexo ui` serves the MLflow and Prefect UIs over the
run's stores, and headless Chromium (Debian's `chromium` + `chromedriver`, driven by Selenium; `make test-all`
installs them) renders the pages. Each page is checked for what the README's reviewer section promises, from the text
the page shows, and saved as a screenshot under the test's temporary folder (printed at the end of the module).

Slow (a pipeline run, two servers, a browser): `make test-all` runs it, `make test` does not."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.core import tracking
from tasks.core.config import Profile
from tasks.core.datasets import dataset_hash
from tests.flows.conftest import tmp_params
from tests.profiles import profile_under
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder
from tests.tasks.mlflow_servers import free_port

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=2400,1200",  # wide enough for the reviewer columns beside MLflow's assistant panel
)
OWNER = "mine"
SERVERS_UP_S = 300  # `flexo ui` on 2 shared cores: MLflow's and Prefect's imports and database migrations
PAGE_S = 60  # a page's first render (the UI bundles load, then the API calls)
STOP_S = 60
URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass
class World:
    profile: Profile
    mlflow: str  # the MLflow UI's base URL
    prefect: str  # the Prefect UI's base URL
    experiment_id: str
    result: dict[str, Any]  # the pipeline's summary
    shots: Path


def _wait_up(urls: list[str], ui: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVERS_UP_S
    pending = list(urls)
    while pending:
        try:
            urllib.request.urlopen(pending[0], timeout=2)
            pending.pop(0)
        except OSError:
            if ui.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flexo ui did not serve {pending[0]}:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)


def _stop(ui: subprocess.Popen) -> None:
    """SIGTERM to `flexo ui` (it stops both servers' process groups); whatever of its tree still runs after that is
    killed, so no server outlives the test."""
    import psutil

    try:
        tree = psutil.Process(ui.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    ui.send_signal(signal.SIGTERM)
    try:
        ui.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        ui.kill()
        ui.wait()
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)


def _pipeline(profile: Profile, prefect_api: str) -> dict[str, Any]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import pipeline

    saved = {name: os.environ.get(name) for name in URI_VARS}
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api}):  # the flow runs land in the UI's Prefect server
            return pipeline(profile=profile)
    finally:  # the store's URI must not reach later tests' subprocesses
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _world_profile(tiny_profile: Profile, root: Path) -> Profile:
    """One public and one owner domain from text folders (enough text for the tiny budgets)."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write_txt_folder(root / "pub", 200, seed=5)
    write_txt_folder(root / OWNER, 60, seed=6)
    base = profile_under(tiny_profile, root)
    base = base.model_copy(update={"attack": base.attack.model_copy(update={"domain": OWNER})})
    return with_domains(
        base,
        {"public": folder_domain(root / "pub", owner="pub"), OWNER: folder_domain(root / OWNER, owner="me")},
        near_duplicate_threshold=0.99,
    )


@pytest.fixture(scope="module")
def world(tiny_profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """`flexo ui` on free ports over a fresh store, then one pipeline run reporting to its Prefect server."""
    root = tmp_path_factory.mktemp("ui")
    profile = _world_profile(tiny_profile, root)
    ports = {"ui_port": free_port(), "prefect_ui_port": free_port()}
    params = tmp_params(root)  # the same paths as the profile's (paths_under)
    raw = yaml.safe_load(params.read_text())
    raw["defaults"]["registry"].update(ports)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in (*URI_VARS, "PREFECT_API_URL")}
    env.update(FLEXO_PARAMS=str(params), PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = root / "flexo-ui.log"
    flexo = str(Path(sys.executable).parent / "flexo")
    with open(log, "w") as out:
        ui = subprocess.Popen(
            [flexo, "ui", "--profile", "tiny"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(root)
        )
    try:
        mlflow_ui = f"http://127.0.0.1:{ports['ui_port']}"
        prefect_ui = f"http://127.0.0.1:{ports['prefect_ui_port']}"
        _wait_up([f"{mlflow_ui}/health", f"{prefect_ui}/api/health"], ui, log)
        result = _pipeline(profile, f"{prefect_ui}/api")
        assert result["failed"] == [], result["failed"]
        experiment_id = tracking.setup(profile)
        shots = root / "screenshots"
        shots.mkdir()
        yield World(profile, mlflow_ui, prefect_ui, experiment_id, result, shots)
        print(f"\nscreenshots: {shots}")
    finally:
        _stop(ui)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver; Selenium Manager is never asked (the driver is given)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: `make browser` (run by `make test-all`) installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = tempfile.mkdtemp(prefix="flexo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def _page(browser: Any, world: World, url: str | None, shows: str, name: str) -> str:
    """Open `url` (None: stay on the page), wait until it shows `shows`, save a screenshot; the page's visible
    text."""
    from selenium.webdriver.common.by import By

    if url is not None:
        browser.get(url)
    deadline = time.monotonic() + PAGE_S
    text = ""
    while time.monotonic() < deadline:
        text = browser.find_element(By.TAG_NAME, "body").text
        if shows in text:
            break
        time.sleep(0.5)
    time.sleep(1)  # the rest of the page's requests
    browser.save_screenshot(str(world.shots / f"{name}.png"))
    text = browser.find_element(By.TAG_NAME, "body").text
    assert shows in text, (
        f"{url or browser.current_url} never showed {shows!r} (screenshot {world.shots / name}.png):\n{text[:2000]}"
    )
    return text


def _run_id(world: World, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(world.profile))
    (run,) = client.search_runs([world.experiment_id], f"attributes.run_name = '{name}'")
    return str(run.info.run_id)


def test_the_experiment_opens_on_its_runs_not_the_genai_overview(browser, world) -> None:
    text = _page(browser, world, tracking.experiment_url(world.mlflow, world.experiment_id), "matching runs", "runs")
    assert "/runs" in browser.current_url and f"pipeline/{world.profile.name}" in text
    assert "No data available" not in text and "Token Usage" not in text  # the GenAI overview's panels


def test_runs_nest_under_the_pipeline_run_with_the_reviewer_columns(browser, world) -> None:
    from selenium.webdriver.common.by import By

    url = tracking.reviewer_view_url(world.mlflow, world.experiment_id)
    collapsed = _page(browser, world, url, "matching runs", "reviewer-view")
    parent = f"pipeline/{world.profile.name}"
    assert parent in collapsed and f"train_expert/{OWNER}" not in collapsed  # children folded into their parent
    for column in ("Dataset", "val_loss", "extraction_rate", "bpb.M_pub.average", "stage", "domain", "data_md5"):
        assert f"\n{column}\n" in collapsed, column
    expand = f"//a[normalize-space(.)='{parent}']/ancestor::*[contains(@class,'ag-cell-value')][1]//button"
    browser.find_element(By.XPATH, expand).click()
    text = _page(browser, world, None, f"train_expert/{OWNER}", "reviewer-view-expanded")
    for child in (
        "data/public",
        f"data/{OWNER}",
        "train_public",
        f"train_expert/{OWNER}",
        "evaluate",
        f"attack/{OWNER}",
    ):
        assert f"\n{child}\n" in text, child
    assert f"{OWNER}/train" in text  # the Dataset column: the split a run read
    assert dataset_hash(world.profile, OWNER) in text  # the data_md5 column


def test_a_run_page_names_its_parent_and_the_datasets_it_read(browser, world) -> None:
    base = f"{world.mlflow}/#/experiments/{world.experiment_id}/runs"
    trained = _page(browser, world, f"{base}/{_run_id(world, f'train_expert/{OWNER}')}", "Parent run", "expert-run")
    assert f"Parent run\npipeline/{world.profile.name}" in trained
    assert f"{OWNER}/train" in trained and "Training" in trained and "val_loss" in trained
    built = _page(browser, world, f"{base}/{_run_id(world, f'data/{OWNER}')}", "Parent run", "data-run")
    assert f"Data card: {OWNER}" in built and "owner: me" in built  # the card as the run's description
    assert f"{OWNER}/train ({dataset_hash(world.profile, OWNER)})" in built and "Built" in built
    assert "\ningested\n" in built and "\nquarantined\n" in built


def test_the_registered_models_list_shows_aliases_and_no_audit_keys(browser, world) -> None:
    registry = world.profile.registry
    expert = f"{registry.expert_model_prefix}{OWNER}"
    text = _page(browser, world, f"{world.mlflow}/#/models", expert, "registered-models")
    assert registry.moe_model in text and registry.public_model in text and "@ active" in text
    assert "audit" not in text.lower()


def test_a_model_version_description_is_its_card(browser, world) -> None:
    registry = world.profile.registry
    expert = f"{registry.expert_model_prefix}{OWNER}"
    card = _page(browser, world, f"{world.mlflow}/#/models/{expert}/versions/1", "Status: active", "expert-version")
    for line in ("owner me", f"data version (DVC md5) {dataset_hash(world.profile, OWNER)}", "DP epsilon", "val_loss"):
        assert line in card, line
    assert "extraction rate" in card and "check extraction passed" in card and "@ active" in card
    moe = _page(browser, world, f"{world.mlflow}/#/models/{registry.moe_model}/versions/1", expert, "moe-version")
    assert "@ serving" in moe and f"{OWNER} {expert} 1 me" in moe  # the experts it was assembled from


def _artifact(world: World, key: str) -> dict[str, Any]:
    """The latest artifact under `key`, read from the Prefect server's API (its id is the page's address)."""
    request = urllib.request.Request(
        f"{world.prefect}/api/artifacts/filter",
        data=json.dumps({"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        (artifact,) = json.load(response)
    return dict(artifact)


def test_the_prefect_ui_shows_the_run_summary_and_the_benchmark_table(browser, world) -> None:
    listed = _page(browser, world, f"{world.prefect}/artifacts", "flexo-benchmark", "prefect-artifacts")
    assert "flexo-pipeline" in listed and "FLEXMIX-small benchmark results" in listed
    table = _artifact(world, "flexo-benchmark")
    rows = json.loads(table["data"])
    shown = _page(browser, world, f"{world.prefect}/artifacts/artifact/{table['id']}", "FlexOlmo", "prefect-benchmark")
    assert f"{len(rows)} Items" in shown
    flex = next(r for r in rows if r["table"] == "bpb" and r["model"].startswith("FlexOlmo_no_RT"))
    assert f"{flex['model']}\n{flex['public']} {flex[OWNER]} {flex['average']}" in shown  # its row, as rendered
    summary = _artifact(world, "flexo-pipeline")
    page = f"{world.prefect}/artifacts/artifact/{summary['id']}"
    text = _page(browser, world, page, f"pipeline ({world.profile.name})", "prefect-summary")
    completed = sum(r["status"] == "completed" for r in world.result["steps"])
    assert f"{completed} completed" in text and "train_expert" in text
