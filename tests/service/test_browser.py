"""The web page in a real headless browser: upload a photo, see tags, category and a grid; click an item.

Drives Debian's ``chromium`` (``scripts/install_browser.sh`` installs it) through Playwright, never a browser
downloaded by ``playwright install``. Without chromium the test skips, except under ``CI=true``, where it fails.
Set ``FASHIONLENS_SCREENSHOT=path.png`` to also save the screenshot there (the README's picture is made so).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ServiceModels

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 60_000


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found; run scripts/install_browser.sh"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


UNDER_CI = os.environ.get("CI", "").lower() == "true"
# Outside CI, skip at collection, before the session fixtures train models for nothing; under CI, fail each test
# (a collection error would stop the whole test run).
if not UNDER_CI and (_reason := _missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian chromium under Playwright, with a fresh profile."""
    reason = _missing()
    if reason is not None:
        pytest.fail(f"the browser test must run under CI: {reason}")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        # launch_persistent_context is how Playwright takes a --user-data-dir of our own
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 820}, timeout=TIMEOUT_MS)
        yield context
        context.close()


def _open(browser: Any, server: str) -> tuple[Any, list[str]]:
    """A new page on the server's web page, and the list its script errors will be appended to."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    return page, errors


def test_upload_shows_tags_category_and_results(browser: Any, live_server: str, service_models: ServiceModels,
                                                tmp_path: Path) -> None:
    page, errors = _open(browser, live_server)
    page.wait_for_function("document.getElementById('models').textContent.includes('catalogue')")
    page.set_input_files("#file", str(service_models.queries[0]))

    page.wait_for_selector("#results .item")
    page.wait_for_selector("#tags .tag")
    assert page.locator("#results .item").count() == 12
    assert page.locator("#category .path span").count() == 3  # masterCategory › subCategory › articleType
    assert page.locator("#tags .tag").count() >= 1
    page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete "
                           "&& i.naturalWidth > 0)")
    assert page.evaluate("document.getElementById('photo').naturalWidth") > 0
    assert not page.locator("#status.error").count(), page.inner_text("#status")
    screenshot = tmp_path / "web-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("FASHIONLENS_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["FASHIONLENS_SCREENSHOT"])

    first = page.locator("#results .item").first
    clicked = first.get_attribute("data-item-id")
    first.click()
    page.wait_for_function("document.getElementById('results-title').textContent.startsWith('Items similar to')")
    page.wait_for_selector("#results .item")
    shown = page.locator("#results .item").evaluate_all("items => items.map(i => i.dataset.itemId)")
    assert clicked not in shown and len(shown) == 12
    assert errors == []


def test_page_shows_which_attributes_steered_the_search(browser: Any, steered_server: str,
                                                       service_models: ServiceModels) -> None:
    page, errors = _open(browser, steered_server)
    page.wait_for_selector("#steer-toggle:not([hidden])")
    page.set_input_files("#file", str(service_models.street_photos[0]))
    page.wait_for_function("document.getElementById('steering').textContent.startsWith('Steered by: ')")
    assert page.locator("#steering").is_visible() and "→" in page.inner_text("#steering")
    page.uncheck("#steer")  # searches the same photo again, unsteered
    page.wait_for_function("document.getElementById('steering').hidden")
    page.wait_for_selector("#results .item")
    assert not page.locator("#status.error").count(), page.inner_text("#status")
    assert errors == []


def test_page_fits_a_phone_screen(browser: Any, live_server: str, service_models: ServiceModels) -> None:
    page = browser.new_page()
    page.set_viewport_size({"width": 375, "height": 740})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server + "/")
    # A wide monospaced font stands in for whatever fonts another machine has: text that cannot wrap shows here
    page.add_style_tag(content="* { font-family: monospace !important; letter-spacing: 1.5px; }")
    page.set_input_files("#file", str(service_models.street_photos[2]))
    page.wait_for_selector("#results .item")
    page.wait_for_selector("#tags .tag")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    assert page.locator("#file").evaluate("input => input.accept") == "image/*"


def test_the_searched_box_is_drawn_on_the_photo(browser: Any, live_server: str, service_models: ServiceModels,
                                                tmp_path: Path) -> None:
    from PIL import Image

    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server + "/")
    page.wait_for_function("document.getElementById('models').textContent.includes('catalogue')")
    with page.expect_response(lambda response: "/v1/search" in response.url) as searched:
        page.set_input_files("#file", str(service_models.street_photos[0]))
    answer = searched.value.json()
    crop, image = answer["crop"], answer["image"]
    assert crop["mode"] == "auto" and not crop["fallback"]
    page.wait_for_selector("#crop-box", state="visible")
    page.wait_for_function("document.getElementById('photo').complete")
    photo, drawn = page.locator("#photo").bounding_box(), page.locator("#crop-box").bounding_box()
    scale_x, scale_y = photo["width"] / image["width"], photo["height"] / image["height"]
    x0, y0, x1, y1 = crop["box"]
    # drawn where the API says, at the photo's displayed scale (to a pixel of rounding)
    assert drawn["x"] == pytest.approx(photo["x"] + x0 * scale_x, abs=1.5)
    assert drawn["y"] == pytest.approx(photo["y"] + y0 * scale_y, abs=1.5)
    assert drawn["width"] == pytest.approx((x1 - x0) * scale_x, abs=1.5)
    assert drawn["height"] == pytest.approx((y1 - y0) * scale_y, abs=1.5)
    assert drawn["width"] * drawn["height"] < photo["width"] * photo["height"]
    assert f"garment found at {crop['box_text']}" in page.inner_text("#crop-note")

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 300), (255, 255, 255)).save(blank)
    page.set_input_files("#file", str(blank))
    page.wait_for_function("document.getElementById('crop-note').textContent.includes('whole photo')")
    assert page.locator("#crop-box").is_hidden()
    assert "no garment found" in page.inner_text("#crop-note")
