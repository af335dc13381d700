"""The web pages in a real browser (Debian's headless chromium through
Selenium) against the whole stack of test_signing_flows: person A logs in
with an SMS code, fills the IOU form, starts signing, draws a signature and
confirms by SMS code; person B opens the SMS link in a fresh browser whose
camera is Chromium's fake device (tests/support/fake_camera.py), logs in and
signs by face: the page shows the head turns to perform, the test has the
stage clip's performer do them in front of the fake camera (B's registry
photo is that performer), and the page films them. The page shows the IOU
effective and the signing report and evidence package download. Then, with the same two
sessions, 我的二维码: A shows a QR code as 收款人, B opens its link, fills the
receipt and starts signing it. What the pages show is checked, and the flow's
state over RPC. The session is a cookie the browser's tabs share: A's new tab
is logged in, and a browser without one is sent to log in. Registration over
the pages is in test_web_camera.py."""
from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from services.signing.evidence_package import open_package
from tests.support.browser import Page, browser, log_in, perform_challenge, sign_by_sms
from tests.support.stack import BORROWER, LENDER, party, people
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

def fill_person(page: Page, field: str, person: tuple[str, str, str]) -> None:
    for key, value in zip(("name", "id_number", "phone"), person, strict=True):
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


def receipt_from_a_qr_code(a: Page, b: Page, stack, payee: str, payer: str, tmp_path) -> None:
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
    assert (b.text('#invite [data-error-for="invite"]') == "二维码无效，请让对方重新生成"
            and not b.visible("#document-form"))

    # a browser without a session goes to log in, keeping the way back (invite included) ...
    # (another browser: every tab of B's shares B's session cookie)
    stranger = Page(browser(tmp_path / "downloads-stranger"), stack.gateway_url)
    try:
        stranger.open(invite)
        stranger.wait(lambda: "/?next=" in stranger.driver.current_url, "the login redirect")
        way_back = stranger.driver.current_url
        assert stranger.session_cookie() is None
    finally:
        stranger.driver.quit()
    assert parse_qs(urlsplit(way_back).query)["next"] == [invite]
    # ... which B, logged in, follows, as it would right after logging in
    b.open(way_back)
    b.wait(lambda: b.driver.current_url == stack.gateway_url + invite, "the way back to the invite")
    # the way back is a path on this site, however it is spelled (no open redirect)
    for evil in ("/.//evil.example/x", "/./\\evil.example", "//evil.example", "/\\evil.example",
                 "https://evil.example/"):
        b.open("/?next=" + quote(evil, safe=""))
        b.wait_visible("#ready")
        assert urlsplit(b.driver.current_url).netloc == urlsplit(stack.gateway_url).netloc, evil
    b.open(way_back)
    b.wait(lambda: b.driver.current_url == stack.gateway_url + invite, "the way back to the invite, again")
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
        # the session is an HttpOnly cookie (no script reads it) that every tab shares:
        # a new tab at the start page is logged in, and the page's GET /me says as whom
        cookie = a.session_cookie()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # the stack's gateway is plain HTTP on this machine
        assert a.driver.execute_script("return document.cookie") == ""
        first_tab = a.driver.current_window_handle
        a.driver.switch_to.new_window("tab")
        a.open("/")
        a.wait_visible("#ready")
        assert "实名认证已完成" in a.text("#status") and a.visible("#logout")
        status, me = a.api_get("/me")
        assert status == 200 and me["person_id"] == lender, (status, me)
        a.driver.close()
        a.driver.switch_to.window(first_tab)

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
        sign_by_sms(a, stack, LENDER[2])
        a.wait(lambda: a.text("#turn") == "等待借款人签署", "A's signature to count")
        assert not a.visible("#sign")
        assert "已签署" in a.text("#parties").splitlines()[0]
        flow = stack.rpc.signing.get_flow(flow_id=flow_id)
        assert flow["state"] == "waiting" and flow["next_person_id"] == borrower
        assert flow["parties"][0]["willingness_method"] == "sms"

        # -- B gets the SMS link and opens it in a fresh browser: login first, then back to the flow
        sent = wait_for(lambda: [m for m in stack.sms() if m["template"] == "sign_request"
                                 and m["phone"] == BORROWER[2]])
        assert len(sent) == 1, "one sign_request SMS for the borrower"
        # A reminds B (催签): a second sign request; a second reminder the same day is refused, saying so
        a.wait_visible("#remind")
        a.click('#remind-form button[type="submit"]')
        a.wait(lambda: "已短信提醒对方签署" in a.text("#remind-done"), "the reminder to be sent")
        assert wait_for(lambda: len([m for m in stack.sms() if m["template"] == "sign_request"
                                     and m["phone"] == BORROWER[2]]) == 2)
        a.click('#remind-form button[type="submit"]')
        a.wait(lambda: "今天已催签过" in a.text('#remind-form [data-error-for="_form"]'), "the second to be refused")
        link = sent[-1]["params"]["link"]
        assert link == f"{stack.gateway_url}/flows/{flow_id}"
        camera = tmp_path / "camera-b.y4m"
        b = Page(browser(tmp_path / "downloads-b", camera=camera), stack.gateway_url)
        b.open(link)
        b.wait(lambda: b.driver.current_url.endswith("/?next=" + f"%2Fflows%2F{flow_id}"), "the login redirect")
        log_in(b, stack, BORROWER[2])
        b.wait(lambda: b.driver.current_url == link, "the way back to the SMS link")

        # -- B signs by face: the head turns the page asks for, live in front of the camera
        b.wait_visible("#sign")
        assert b.text("#turn") == "轮到您签署"
        b.draw_signature()
        b.click('#sign-form input[name="method"][value="face"]')
        assert not b.visible('#sign-form [data-upload]')  # the platform takes no selfie files
        b.click('#sign-form button[type="submit"]')
        perform_challenge(b, "#sign-form", camera)
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
        # -- and the evidence package (证据包), whose signed manifest holds under the platform's log key
        b.click('#evidence-form button[type="submit"]')
        package = b.wait(lambda: next(iter(downloads.glob("证据包-*.zip")), None), "the evidence package download")
        b.wait(lambda: package.stat().st_size > 0 and not list(downloads.glob("*.crdownload")), "the download to end")
        opened = open_package(package.read_bytes(), stack.rpc.signing.log_public_key()["public_key"])
        assert [c.subject for c in opened.checks if not c.ok] == [] and "document.pdf" in opened.files

        # A's page, reloaded, shows the same
        a.open(f"/flows/{flow_id}")
        a.wait(lambda: a.text("#state") == "已生效", "A to see the IOU effective")

        # -- then a receipt from A's QR code, in the same two sessions
        receipt_from_a_qr_code(a, b, stack, payee=lender, payer=borrower, tmp_path=tmp_path)
    finally:
        for page in (a, b):
            if page is not None:
                page.driver.quit()


def test_the_verify_page_says_a_voided_receipt_is_void(stack, tmp_path):
    """Valid signatures on an agreement the parties voided: /verify (no login)
    says the signatures hold and the document is void, with the reason."""
    import base64

    payee, payer = people(stack)
    rendered = stack.document("receipt", {
        "initiator_role": "付款人", "payee": party(LENDER), "payer": party(BORROWER), "amount": "300",
        "reason": "押金", "received_at": "2026-11-28T09:30:00", "remark": ""})
    flow_id = stack.start(rendered, [(payer, "payer"), (payee, "payee")])["flow_id"]
    stack.sign(flow_id, payer, phone=BORROWER[2])
    stack.sign(flow_id, payee, phone=LENDER[2])
    stack.void_action(stack.rpc.signing.request_void, payer, BORROWER[2], flow_id=flow_id, reason="押金已退还")
    stack.void_action(stack.rpc.signing.confirm_void, payee, LENDER[2], flow_id=flow_id)
    pdf = tmp_path / "receipt.pdf"
    pdf.write_bytes(base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"]))
    page = Page(browser(tmp_path / "downloads"), stack.gateway_url)
    try:
        page.open("/verify")
        page.find("#pdf-file").send_keys(str(pdf))
        page.click('#verify-form button[type="submit"]')
        page.wait_visible("#result")
        page.wait(lambda: page.text("#agreement-status"), "the document's status")
        assert page.text("#verdict").startswith("签名有效，但文件当前状态为：已作废，作废原因：押金已退还，双方确认于 ")
        assert page.text("#agreement-status").startswith("文件状态：已作废，作废原因：押金已退还，双方确认于 ")
        assert "全部签署完成的最终版本" in page.text("#agreement-detail")
        assert "证据日志" in page.text("#agreement-detail")
        assert "已由 2 个独立见证人联署（witness-1.test、witness-2.test）" in page.text("#agreement-detail")
    finally:
        page.driver.quit()


def test_a_missing_browser_fails_clearly(monkeypatch, tmp_path):
    """Without chromium the browser test must fail, never skip."""
    monkeypatch.setitem(browser.__globals__, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="chromium and chromium-driver"):
        browser(tmp_path)
