"""The web pages in a real browser (Debian's headless chromium through
Selenium) against the whole stack of test_signing_flows: person A logs in
with an SMS code, fills the IOU form, starts signing, draws a signature and
confirms by SMS code; person B opens the SMS link in a fresh browser, logs in,
signs with a selfie; the page shows the IOU effective and the signing report
downloads. Then, with the same two sessions, 我的二维码: A shows a QR code as
收款人, B opens its link, fills the receipt and starts signing it. What the
pages show is checked, and the flow's state over RPC."""
from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.faces import face_path
from tests.support.stack import BORROWER, LENDER, party, people

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE_SCREEN = (412, 915)  # CSS pixels of a common phone
TIMEOUT = 60


def browser(download_dir: Path):
    """Headless chromium at phone width that saves downloads in ``download_dir``."""
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


def log_in(page: Page, stack, phone: str) -> None:
    """The start page's login: phone, the code from the SMS outbox, submit."""
    page.wait_visible("#login-form")
    page.type("#login-phone", phone)
    # The registration's code went to this phone moments ago: identity allows a
    # new one after 60 s, and the page says so next to the phone, as a person sees it.
    deadline = time.monotonic() + 90
    while True:
        before = len(stack.sms())
        page.click("#login-form [data-send-code]")
        outcome = page.wait(lambda: page.text('#login-form [data-error-for="code"]')
                            or page.text('#login-form [data-error-for="phone"]'), "an answer to the code request")
        if "验证码已发送" in outcome:
            break
        assert outcome.startswith("发送太频繁，请稍后再试") and time.monotonic() < deadline, outcome
        time.sleep(5)
    page.type("#login-code", stack.latest_code(phone, "phone_code", before))
    page.click('#login-form button[type="submit"]')


def fill_person(page: Page, field: str, person: tuple[str, str, str]) -> None:
    for key, value in zip(("name", "id_number", "phone"), person):
        page.type(f'[name="{field}.{key}"]', value)


def preview_and_start(page: Page, order: list[str]) -> None:
    """The document editor (/new and /receipts/new): submit the filled form, see
    the signing order and the PDF preview, start signing, land on the flow page."""
    page.click('#document-form button[type="submit"]')
    page.wait_visible("#preview")
    assert page.text("#order").splitlines() == order
    page.wait(lambda: page.find("#pdf").get_attribute("src").startswith("blob:"), "the PDF preview")
    page.click('#flow-form button[type="submit"]')
    page.wait(lambda: "/flows/" in page.driver.current_url, "the flow page")


def receipt_from_a_qr_code(a: Page, b: Page, stack, payee: str, payer: str) -> None:
    """A (logged in) shows 我的二维码 as 收款人; B (logged in) opens its link: a
    receipt with both people filled from their real-name records, B as 付款人."""
    a.open("/")
    a.wait_visible("#qr")
    a.click('#qr [data-role="payee"]')
    a.wait_visible("#qr-code")
    assert a.find("#qr-image").get_attribute("src").startswith("data:image/svg+xml")
    assert a.find("#qr-image").get_attribute("naturalWidth") != "0"  # the SVG is drawn under the page's CSP
    assert "有效期至" in a.text("#qr-expiry")
    href = a.find("#qr-link").get_attribute("href")
    assert href.startswith(stack.gateway_url + "/receipts/new?")  # the platform's public address
    link = urlsplit(href)
    assert "invite" in parse_qs(link.query)
    invite = f"{link.path}?{link.query}"

    # a bad invite is said so, and B stays logged in (its 403 is not a session's)
    b.open("/receipts/new?invite=not.valid")
    b.wait(lambda: b.text('#invite [data-error-for="invite"]'), "the bad invite's error")
    assert b.text('#invite [data-error-for="invite"]') == "二维码无效，请让对方重新生成" and not b.visible("#document-form")

    # a tab without a session goes to log in, keeping the way back (invite included) ...
    b.driver.switch_to.new_window("tab")  # sessionStorage is per tab: this one has none
    b.open(invite)
    b.wait(lambda: "/?next=" in b.driver.current_url, "the login redirect")
    way_back = b.driver.current_url
    assert parse_qs(urlsplit(way_back).query)["next"] == [invite]
    b.driver.close()
    b.driver.switch_to.window(b.driver.window_handles[0])
    # ... which B's logged-in tab follows, as it would right after logging in
    b.open(way_back)
    b.wait(lambda: b.driver.current_url == stack.gateway_url + invite, "the way back to the invite")
    b.wait(lambda: "邀请" in b.text("#invite-info"), "who invites")
    assert b.text("#invite-info") == "王* 邀请您开具收据：对方为收款人，您为付款人。"  # A is 王䶮

    # the form without the parties (and without choosing a side): those come from the invite
    b.wait_visible("#document-form")
    assert b.text("#template-title") == "收据"
    assert not b.visible("fieldset.person") and not b.visible('[name="initiator_role"]')
    b.type('[name="amount"]', "1200")
    b.choose('[name="reason"]', "押金")
    b.set_value('[name="received_at"]', f"{date.today() - timedelta(days=1)}T09:30")
    preview_and_start(b, ["付款人（您）", "收款人"])
    b.wait_visible("#sign")
    assert b.text("#turn") == "轮到您签署"

    flow = stack.rpc.signing.get_flow(flow_id=b.driver.current_url.rsplit("/", 1)[1])
    assert [(p["person_id"], p["role"]) for p in flow["parties"]] == [(payer, "付款人"), (payee, "收款人")]
    values = stack.rpc.documents.get_document_content(document_id=flow["document_id"])["values"]
    assert values["payee"] == party(LENDER) and values["payer"] == party(BORROWER)
    assert values["reason"] == "押金" and values["initiator_role"] == "付款人"


def test_iou_then_qr_receipt_in_two_browsers(stack, tmp_path):  # noqa: F811  (the imported fixture)
    lender, borrower = people(stack)
    today = date.today()
    a = Page(browser(tmp_path / "downloads-a"), stack.gateway_url)
    b = None
    try:
        # -- person A (出借人) logs in: already verified, so the page says so
        a.open("/")
        log_in(a, stack, LENDER[2])
        a.wait_visible("#ready")
        assert "实名认证已完成" in a.text("#status")
        assert a.driver.execute_script("return sessionStorage.getItem('esign.person')") == lender

        # -- the IOU form, generated from the template
        a.open("/new")
        a.wait_visible('[data-template="iou"]')
        a.click('[data-template="iou"]')
        a.wait_visible("#document-form")
        a.choose('[name="initiator_role"]', "出借方")
        fill_person(a, "lender", LENDER)
        fill_person(a, "borrower", BORROWER)
        a.type('[name="amount"]', "10005")
        a.choose('[name="purpose"]', "家庭装修")
        a.type('[name="annual_rate"]', "15")  # over the template's 12%
        a.set_value('[name="start_date"]', today.isoformat())
        a.set_value('[name="repayment_date"]', (today + timedelta(days=90)).isoformat())
        a.choose('[name="repayment_method"]', "一次性还本付息")
        a.type('[name="remark"]', "按" * 41)
        assert a.find('[name="remark"]').get_attribute("value") == "按" * 40  # the form holds the template's limit
        a.click('#document-form button[type="submit"]')
        # the service's error is shown next to the field it names
        a.wait(lambda: a.text('[data-error-for="annual_rate"]'), "the rate's error")
        assert "12" in a.text('[data-error-for="annual_rate"]')
        assert a.find('[name="annual_rate"]').get_attribute("aria-invalid") == "true"
        assert not a.visible("#preview")
        a.type('[name="annual_rate"]', "3.65")
        a.type('[name="remark"]', "按期还款")
        preview_and_start(a, ["出借人（您）", "借款人"])
        flow_id = a.driver.current_url.rsplit("/", 1)[1]

        # -- A signs: handwriting on the canvas, willingness by SMS code
        a.wait_visible("#sign")
        assert a.text("#turn") == "轮到您签署"
        assert a.text("#state") == "待签署"
        a.draw_signature()
        before = len(stack.sms())
        a.click('#sign-form button[type="submit"]')
        a.wait_visible("#sign-code")
        a.type("#sign-code", stack.latest_code(LENDER[2], "willingness_code", before))
        a.click('#sign-form button[type="submit"]')
        a.wait(lambda: a.text("#turn") == "等待借款人签署", "A's signature to count")
        assert not a.visible("#sign")
        assert "已签署" in a.text("#parties").splitlines()[0]
        flow = stack.rpc.signing.get_flow(flow_id=flow_id)
        assert flow["state"] == "waiting" and flow["next_person_id"] == borrower
        assert flow["parties"][0]["willingness_method"] == "sms"

        # -- B gets the SMS link and opens it in a fresh browser: login first, then back to the flow
        sent = [m for m in stack.sms() if m["template"] == "sign_request" and m["phone"] == BORROWER[2]]
        assert sent, "no sign_request SMS for the borrower"
        link = sent[-1]["params"]["link"]
        assert link == f"{stack.gateway_url}/flows/{flow_id}"
        b = Page(browser(tmp_path / "downloads-b"), stack.gateway_url)
        b.open(link)
        b.wait(lambda: b.driver.current_url.endswith("/?next=" + f"%2Fflows%2F{flow_id}"), "the login redirect")
        log_in(b, stack, BORROWER[2])
        b.wait(lambda: b.driver.current_url == link, "the way back to the SMS link")

        # -- B signs with a selfie
        b.wait_visible("#sign")
        assert b.text("#turn") == "轮到您签署"
        b.draw_signature()
        b.click('#sign-form input[name="method"][value="face"]')
        b.find('#sign-form input[name="selfie"]').send_keys(str(face_path("obama")))
        b.click('#sign-form button[type="submit"]')
        b.wait(lambda: b.text("#state") == "已生效", "the IOU to become effective")
        assert not b.visible("#sign") and b.visible("#report")
        assert all("已签署" in line for line in b.text("#parties").splitlines())
        done = stack.rpc.signing.get_flow(flow_id=flow_id)
        assert done["state"] == "completed"
        assert [p["willingness_method"] for p in done["parties"]] == ["sms", "face"]
        assert [p["person_id"] for p in done["parties"]] == [lender, borrower]

        # -- the signing report downloads
        b.click('#report-form button[type="submit"]')
        downloads = tmp_path / "downloads-b"
        report = b.wait(lambda: next(iter(downloads.glob("签约报告-*.pdf")), None), "the report download")
        b.wait(lambda: report.stat().st_size > 0 and not list(downloads.glob("*.crdownload")), "the download to end")
        assert report.read_bytes().startswith(b"%PDF")
        assert b.find("#report-links a").get_attribute("download") == report.name

        # A's page, reloaded, shows the same
        a.open(f"/flows/{flow_id}")
        a.wait(lambda: a.text("#state") == "已生效", "A to see the IOU effective")

        # -- then a receipt from A's QR code, in the same two sessions
        receipt_from_a_qr_code(a, b, stack, payee=lender, payer=borrower)
    finally:
        for page in (a, b):
            if page is not None:
                page.driver.quit()


def test_a_missing_browser_fails_clearly(monkeypatch, tmp_path):
    """Without chromium the browser test must fail, never skip."""
    monkeypatch.setitem(browser.__globals__, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="chromium and chromium-driver"):
        browser(tmp_path)
