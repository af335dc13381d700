"""Browsers for the web pages' tests: Debian's headless Chromium through
Selenium at a phone's width, optionally with Chromium's fake camera playing
a Y4M file (tests/support/fake_camera.py), and small verbs over a page."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.gateway.session_cookie import COOKIE
from tests.support import fake_camera

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE_SCREEN = (412, 915)  # CSS pixels of a common phone
TIMEOUT = 60


def browser(download_dir: Path, camera: Path | None = None):
    """Headless chromium at phone width that saves downloads in ``download_dir``;
    with ``camera``, its only camera plays that Y4M file (fake_camera: write a
    still picture there now, the video of each challenge before 开始拍摄)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the browser tests need {' and '.join(missing)}: install the Debian packages "
                    "chromium and chromium-driver (./dev bootstrap does, as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=zh-CN",
                     f"--window-size={PHONE_SCREEN[0]},{PHONE_SCREEN[1]}"):
        options.add_argument(argument)
    if camera is not None:
        if not camera.exists():  # the device needs the file, and keeps its frame size, from the start
            fake_camera.still_video(camera)
        for argument in fake_camera.chromium_arguments(camera):
            options.add_argument(argument)
    download_dir.mkdir(parents=True, exist_ok=True)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir), "download.prompt_for_download": False,
        "safebrowsing.enabled": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


class Page:
    """One person's browser: small verbs over Selenium, with the page's text
    and console in every failure message."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url

    def open(self, path_or_url: str) -> None:
        self.driver.get(path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def visible(self, css: str) -> bool:
        from selenium.common.exceptions import NoSuchElementException

        try:
            return self.find(css).is_displayed()
        except NoSuchElementException:
            return False

    def session_cookie(self) -> dict | None:
        """The session cookie as the browser keeps it (WebDriver sees HttpOnly cookies; scripts do not)."""
        return self.driver.get_cookie(COOKIE)

    def api_get(self, path: str) -> tuple[int, dict]:
        """GET ``/api/v1<path>`` from the page, as its scripts do (this site's origin, the browser's
        cookie): the status and the JSON answer."""
        return tuple(self.driver.execute_async_script(
            "const [path, done] = arguments;"
            "fetch('/api/v1' + path).then(async (r) => done([r.status, await r.json()]),"
            " (error) => done([0, {error: String(error)}]));", path))

    def state(self) -> str:
        console = "\n".join(f"  {entry['level']}: {entry['message']}" for entry in self.driver.get_log("browser"))
        return f"at {self.driver.current_url}\n--- page ---\n{self.text('body')}\n--- console ---\n{console}"

    def wait(self, predicate, what: str, timeout: float = TIMEOUT):
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda _driver: predicate())
        except TimeoutException:
            pytest.fail(f"waited {timeout}s for {what}\n{self.state()}")

    def wait_visible(self, css: str) -> None:
        self.wait(lambda: self.visible(css), f"{css} to show")

    def type(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def choose(self, css: str, option: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_visible_text(option)

    def set_value(self, css: str, value: str) -> None:
        """Date inputs: their typed form depends on the browser's locale, the value does not."""
        self.driver.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", self.find(css), value)

    def click(self, css: str) -> None:
        self.find(css).click()

    def draw_signature(self) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        pad = self.find("#pad")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", pad)
        (ActionChains(self.driver).move_to_element_with_offset(pad, -120, 10).click_and_hold()
         .move_by_offset(40, -30).move_by_offset(40, 35).move_by_offset(50, -25).move_by_offset(60, 20)
         .release().perform())


ACTION_WORDS = {"turn_left": "向左转头", "turn_right": "向右转头"}


def sign_by_sms(page: Page, stack, phone: str) -> None:
    """The flow page's sign step as a person does it: a handwritten signature on
    the canvas, 确认签署, the willingness code from the SMS to ``phone``, 确认签署."""
    page.wait_visible("#sign")
    page.draw_signature()
    before = len(stack.sms())
    page.click('#sign-form button[type="submit"]')
    page.wait_visible("#sign-code")
    page.type("#sign-code", stack.latest_code(phone, "willingness_code", before))
    page.click('#sign-form button[type="submit"]')


def perform_challenge(page: Page, root: str, camera: Path, previous: str | None = None, still: bool = False) -> str:
    """The person in front of the camera: read the head turns the page under
    ``root`` asks for (a challenge other than ``previous``), have the performer
    do them in front of the fake camera (``still``: hold up a photo instead),
    click 开始拍摄. Answers the challenge's id."""
    instruction = f"{root} [data-instruction]"

    def shown():
        challenge = page.find(instruction).get_attribute("data-challenge")
        return challenge if challenge and challenge != previous and page.visible(f"{root} [data-capture]") else None

    challenge = page.wait(shown, f"a new challenge under {root}")
    actions = page.find(instruction).get_attribute("data-actions").split(",")
    words = [ACTION_WORDS[action] for action in actions]
    assert page.text(instruction) == "，".join(
        [f"请先{words[0]}"] + [("最后" if i == len(words) - 1 and len(words) > 2 else "再") + word
                              for i, word in enumerate(words) if i]), page.text(instruction)
    if still:
        fake_camera.still_video(camera)
    else:
        fake_camera.challenge_video(camera, actions)
    page.click(f"{root} [data-capture]")
    return challenge


def log_in(page: Page, stack, phone: str) -> None:
    """The start page's login: phone, the code from the SMS outbox, submit."""
    page.wait_visible("#login-form")
    page.type("#login-phone", phone)
    # The registration's code went to this phone moments ago: identity allows a new
    # one after OTP.MIN_RESEND_SECONDS (60 s deployed, 5 s in the browser tests' stack),
    # and the page says so next to the phone, as a person sees it.
    deadline = time.monotonic() + 90
    while True:
        before = len(stack.sms())
        page.click("#login-form [data-send-code]")
        outcome = page.wait(lambda: page.text('#login-form [data-error-for="code"]')
                            or page.text('#login-form [data-error-for="phone"]'), "an answer to the code request")
        if "验证码已发送" in outcome:
            break
        assert outcome.startswith("发送太频繁，请稍后再试") and time.monotonic() < deadline, outcome
        time.sleep(2)
    page.type("#login-code", stack.latest_code(phone, "phone_code", before))
    page.click('#login-form button[type="submit"]')
