"""Check the local Airflow's UI in a real browser (Debian's chromium through its WebDriver).

    python -m localdev.ui_check [--screenshot docs/images/transform-dag-graph.png]

Logs in as the admin user, finds both DAGs on the home page with no import errors, opens the
transform DAG's latest successful run in the graph view with the dbt task group expanded,
reads every task's state from the graph and saves a screenshot of it; then opens the dbt docs
site from the Browse menu at one model's page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import quote

from localdev.airflow_local import ADMIN_USER, LocalAirflow
from localdev.stack import LocalStack
from movielens_pipeline.names import DBT_TASK_GROUP_ID, LOAD_DAG_ID, TRANSFORM_DAG_ID

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and none of the background calls to Google's servers a fresh profile makes.
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1800,1300",
)
WAIT_SECONDS = 30
# The model whose page the check opens in the dbt docs site.
DOCS_MODEL = "analytics_top_movies"


class UiCheckFailed(AssertionError):
    """The UI does not show what it should; the message says what was seen."""


def check_ui(airflow: LocalAirflow, screenshot: Path) -> dict[str, str]:
    """Run the browser check; return the state of every task of the transform DAG's latest
    successful run as its graph shows it. Raises UiCheckFailed on what the UI gets wrong."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    runs = [run for run in airflow.runs(TRANSFORM_DAG_ID) if run["state"] == "success"]
    if not runs:
        raise UiCheckFailed(f"{TRANSFORM_DAG_ID} has no successful run to look at")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(browser, WAIT_SECONDS)
    try:
        browser.get(f"{airflow.url}/login/")
        browser.find_element(By.ID, "username").send_keys(ADMIN_USER)
        browser.find_element(By.ID, "password").send_keys(airflow.credentials()["admin_password"])
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(expected_conditions.url_contains("/home"))

        listed = {
            link.get_attribute("href").rsplit("/", 2)[-2]
            for link in browser.find_elements(By.CSS_SELECTOR, "a[href$='/grid']")
        }
        if not {LOAD_DAG_ID, TRANSFORM_DAG_ID} <= listed:
            raise UiCheckFailed(f"The DAG list shows {sorted(listed)}")
        if "Import Errors" in browser.find_element(By.TAG_NAME, "body").text:
            raise UiCheckFailed("The home page reports DAG import errors")

        run_id = quote(runs[0]["dag_run_id"], safe="")
        browser.get(f"{airflow.url}/dags/{TRANSFORM_DAG_ID}/grid?dag_run_id={run_id}&tab=graph")
        # The grid and graph views are a React app in the shadow DOM of #root.
        app = wait.until(lambda b: b.find_element(By.ID, "root").shadow_root)

        def find(css: str) -> object:  # waits until the app has rendered it
            return wait.until(lambda _: app.find_element(By.CSS_SELECTOR, css))

        def click(element: object) -> None:
            # By script: a graph node may sit outside the visible part of the canvas.
            browser.execute_script("arguments[0].click()", element)

        click(find("#show-datasets"))
        click(find(f'[data-id="{DBT_TASK_GROUP_ID}"] span'))  # expands the task group
        find(f'[data-id="{DBT_TASK_GROUP_ID}.dbt_producer_watcher"]')
        click(find(".react-flow__controls-fitview"))  # the whole graph in view
        states = {}
        for element in app.find_elements(By.CSS_SELECTOR, ".react-flow__node"):
            # A task node's paragraphs: its id, then its state (then its operator).
            texts = [
                paragraph.get_attribute("textContent")
                for paragraph in element.find_elements(By.CSS_SELECTOR, "p")
            ]
            if len(texts) > 1:
                states[element.get_attribute("data-id")] = texts[1]
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(screenshot))

        # The dbt docs site the transform DAG published, under Browse > dbt Docs (Cosmos'
        # plugin, reading [cosmos] dbt_docs_dir), opened at one model's page.
        browser.get(f"{airflow.url}/home")
        menu = browser.find_elements(By.CSS_SELECTOR, "a[href$='/cosmos/dbt_docs']")
        if not menu or menu[0].get_attribute("textContent").strip() != "dbt Docs":
            raise UiCheckFailed("The Browse menu has no dbt Docs entry")
        browser.get(menu[0].get_attribute("href"))
        frame = wait.until(lambda b: b.find_element(By.TAG_NAME, "iframe"))
        if not frame.get_attribute("src").endswith("/cosmos/dbt_docs_index.html"):
            raise UiCheckFailed(f"dbt Docs frames {frame.get_attribute('src')}")
        # The docs site itself (what the frame holds), at the model's page.
        browser.get(f"{frame.get_attribute('src')}#!/model/model.movielens_redshift.{DOCS_MODEL}")
        try:
            # A model's page (not the overview) names it and lists what it depends on.
            wait.until(
                lambda b: all(
                    text in b.find_element(By.TAG_NAME, "body").text
                    for text in (DOCS_MODEL, "Depends On")
                )
            )
        except TimeoutException:
            raise UiCheckFailed(f"dbt Docs shows no page for the model {DOCS_MODEL}") from None
        return states
    finally:
        browser.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, default=Path("build/ui/transform-graph.png"))
    args = parser.parse_args(argv)
    try:
        states = check_ui(LocalAirflow(LocalStack()), args.screenshot)
    except UiCheckFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    not_green = {task: state for task, state in states.items() if state != "success"}
    print(f"{len(states)} tasks in the graph; not success: {not_green or 'none'}")
    print(f"screenshot: {args.screenshot}")
    return 1 if not_green else 0


if __name__ == "__main__":
    sys.exit(main())
