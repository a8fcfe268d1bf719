"""``avid play`` in a real headless browser: keys pressed on the page reach the world model as
actions, frames come back and change, and the page shows frames per second and the model."""

import shutil
from dataclasses import replace
import time

import pytest
import requests

from avid.envs import WorldModelEnv
from avid.methods import build_method
from avid.pipelines.play import make_app
from tests.conftest import TINY_UNET
from tests.servers import app_in_thread
from tests.test_avid import ctx_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no headless Chromium here: on Debian/Ubuntu `apt-get install -y chromium chromium-driver`")


@pytest.fixture
def play_app(tiny_denoiser, tiny_store):
    ctx = replace(ctx_for(tiny_denoiser), num_actions=15)  # Procgen's buttons, as the page's keys
    method = build_method("avid", ctx, {"unet": TINY_UNET})
    return make_app(WorldModelEnv(method, str(tiny_store.root)), "tiny-avid")


def test_the_server_steps_the_env_and_refuses_actions_outside_the_space(play_app):
    with app_in_thread(play_app) as url:
        first = requests.post(url + "/reset", timeout=30).json()
        step = requests.post(url + "/step", json={"action": 7}, timeout=30).json()
        assert step["step"] == 1 and step["frame"] != first["frame"]
        assert requests.post(url + "/step", json={"action": 99}, timeout=30).status_code == 422
        assert requests.get(url + "/info", timeout=30).json()["actions_received"] == [7]


@needs_browser
def test_keys_pressed_in_a_headless_browser_drive_the_world_model_and_frames_change(play_app):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    with app_in_thread(play_app) as url:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        try:
            driver.get(url + "/")
            text = lambda id_: driver.find_element(By.ID, id_).text  # noqa: E731
            WebDriverWait(driver, 60).until(lambda d: int(text("step").split()[1]) >= 2)
            assert text("model") == "tiny-avid"
            before = driver.find_element(By.ID, "frame").get_attribute("src")
            ActionChains(driver).key_down(Keys.ARROW_RIGHT).key_down(Keys.ARROW_UP).pause(1.5) \
                .key_up(Keys.ARROW_UP).key_up(Keys.ARROW_RIGHT).perform()
            WebDriverWait(driver, 30).until(lambda d: float(text("fps").split()[0]) > 0)
            after = driver.find_element(By.ID, "frame").get_attribute("src")
            assert after.startswith("data:image/png;base64,") and after != before
            received = requests.get(url + "/info", timeout=30).json()["actions_received"]
            assert 8 in received and 4 in received  # right+up while held, the no-op otherwise
            time.sleep(0.2)
        finally:
            driver.quit()
