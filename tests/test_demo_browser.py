"""The demo page in headless Chromium: keys drive the world model and the frame changes.

Needs Debian's `chromium` (CI installs it; `apt-get install -y chromium`) and the `playwright` Python
package (used only to drive that browser: no browser download). Without them the test is skipped,
unless DREAMER4_REQUIRE_BROWSER=1 (set by .ci/run), where it fails. The screenshot is saved to
artifacts/demo_browser.png.
"""

import io
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from .demo_utils import ROOT, DemoServer, make_checkpoints

pytestmark = pytest.mark.slow     # a demo server driven in headless Chromium: `make test` runs it, `make test-fast` does not

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def require_browser():
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install playwright; no browser download needed)"
    if CHROMIUM is None:
        missing = "chromium is not installed (apt-get install -y chromium)"
    if missing:
        if os.environ.get("DREAMER4_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tok, dyn = make_checkpoints(tmp_path_factory.mktemp("ckpt"))
    srv = DemoServer("--tokenizer", tok, "--dynamics", dyn, "--task", "walker-walk")
    yield srv
    srv.stop()


def wait_for(predicate, timeout=20.0, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


def frame_pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#d4-frame img").screenshot())).convert("RGB"))


def test_keys_play_the_world_model_and_change_the_frame(server, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS,
                                                       viewport={"width": 1280, "height": 1000})
        try:
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            status = page.locator("#d4-status")
            wait_for(lambda: "frame 0" in status.inner_text())
            page.wait_for_selector("#d4-frame img")
            before_src = page.get_attribute("#d4-frame img", "src")
            before = frame_pixels(page)
            page.screenshot(path=str(artifacts / "demo_browser_start.png"))

            page.keyboard.press("ArrowRight")                      # choose action dimension 2
            wait_for(lambda: "action dim 2/6" in status.inner_text())
            page.keyboard.down("ArrowUp")                          # push it to +1 while held
            page.keyboard.press(" ")                               # play
            wait_for(lambda: page.locator("#d4-pause").is_enabled())
            wait_for(lambda: int(status.inner_text().split("frame ")[1].split()[0]) >= 10, timeout=60)
            page.keyboard.up("ArrowUp")
            page.keyboard.press(" ")                               # pause
            wait_for(lambda: page.locator("#d4-play").is_enabled())
            text = status.inner_text()
            page.screenshot(path=str(artifacts / "demo_browser.png"))
            after = frame_pixels(page)

            assert "paused" in text and "frames/s" in text
            pushed = float(text.split("▸")[1].split()[0].rstrip("]"))
            assert pushed > 0.5, text                              # smoothed towards +1 over >= 10 frames
            assert page.get_attribute("#d4-frame img", "src") != before_src
            assert before.shape == after.shape and np.abs(before.astype(int) - after.astype(int)).mean() > 1.0

            page.keyboard.press("r")                               # reset
            wait_for(lambda: "frame 0" in status.inner_text())
        finally:
            context.close()
    assert not errors, errors
