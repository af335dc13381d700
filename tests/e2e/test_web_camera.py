"""The live face check in a real browser: headless chromium whose only camera
is Chromium's fake device playing a Y4M file (tests/support/fake_camera.py),
against the whole stack, whose authority (the registry) holds the stage
clip's performer as every test person's ID photo.

One person, as they would use the pages: registers (name, ID number, phone
and its SMS code, no ID portrait); holds a photo up to the camera and is
told no head turn was seen, with no proof made; then performs the head turns
the page asks for, takes the certificate and sees their level in words. They
sign a document by face the same way (a held-up photo refused first, then a
fresh challenge performed), end their other device's session from 登录设备
(that device's browser is sent to log in, told why), and log out: the logout
clears the session cookie, and its token is refused (403 session_revoked)
over HTTP.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from services.common.errors import Forbidden
from services.gateway.session_cookie import COOKIE
from tests.support.browser import Page, browser, perform_challenge
from tests.support.stack import BORROWER, LENDER, party

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

IOU = {"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "3000",
       "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2027-05-01",
       "repayment_method": "一次性还本付息", "remark": ""}


def http_status(stack, token: str, path: str = "/api/v1/me") -> tuple[int, dict]:
    request = urllib.request.Request(stack.gateway_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def session_over_rpc(stack, phone: str) -> str:
    """Another device logs in (over RPC): a phone code, once identity allows a new one (60 s after the last)."""
    deadline = time.monotonic() + 90
    while True:
        before = len(stack.sms())
        try:
            challenge = stack.rpc.identity.request_phone_code(phone=phone)["challenge_id"]
            break
        except Forbidden as refused:
            assert refused.reason == "otp_resend_too_soon" and time.monotonic() < deadline, refused
            time.sleep(3)
    stack.rpc.identity.confirm_phone_code(challenge_id=challenge, code=stack.latest_code(phone, "phone_code", before))
    return stack.rpc.identity.login(phone_challenge_id=challenge, user_agent="Mozilla/5.0 (iPhone) Safari/604.1")[
        "session"]["token"]


def register(page: Page, stack, person: tuple[str, str, str]) -> None:
    """The start page's registration: name, ID number, phone and the code sent to it."""
    page.open("/")
    page.wait_visible("#login-form")
    page.click("#tab-register")
    page.wait_visible("#register-form")
    page.type("#reg-name", person[0])
    page.type("#reg-id", person[1])
    page.type("#reg-phone", person[2])
    before = len(stack.sms())
    page.click("#register-form [data-send-code]")
    page.wait(lambda: "验证码已发送" in page.text('#register-form [data-error-for="code"]'), "the code to be sent")
    page.type("#reg-code", stack.latest_code(person[2], "phone_code", before))
    page.click('#register-form button[type="submit"]')


def test_register_prove_the_face_live_sign_by_face_and_log_out(stack, tmp_path):
    camera = tmp_path / "camera.y4m"
    page = Page(browser(tmp_path / "downloads", camera=camera), stack.gateway_url)
    try:
        # -- registration over the pages: no ID portrait asked for
        register(page, stack, LENDER)
        page.wait_visible("#face")
        assert page.text("#status") == "已登录。下一步：人脸核身。"
        assert "权威库" in page.text("#face") and "转头" in page.text("#face")
        assert not page.visible("#face [data-upload]") and not page.visible("#face [data-no-camera]")
        token = page.session_cookie()["value"]  # the session the registration set (HttpOnly: WebDriver reads it)
        person_id = page.api_get("/me")[1]["person_id"]
        assert stack.rpc.identity.person_status(person_id=person_id)["next_step"] == "proofing"

        # -- a photo held up to the camera: no head turn, no proof
        page.click("#face-start")
        first = perform_challenge(page, "#face", camera, still=True)
        verdict = page.wait(lambda: page.text('#face [data-error-for="_form"]'), "the liveness verdict")
        assert verdict.startswith("未检测到转头动作"), verdict
        assert page.visible("#face") and not page.visible("#certificate")
        status = stack.rpc.identity.person_status(person_id=person_id)
        assert status["next_step"] == "proofing" and not status["liveness_passed"] and not status["face_verified"]

        # -- the person, live, performing a new challenge: the authority's photo matches
        assert page.text("#face-start") == "重新核身"
        page.click("#face-start")
        perform_challenge(page, "#face", camera, previous=first)
        page.wait_visible("#certificate")
        assert page.text("#status") == "人脸核身已通过。下一步：领取数字证书。"
        page.click("#certificate-take")
        page.wait_visible("#ready")
        assert page.text("#assurance") == "认证等级：活体检测及权威库证件照人脸比对通过"
        assert page.find("#assurance").get_attribute("data-level") == "authority_face_liveness"
        status = stack.rpc.identity.person_status(person_id=person_id)
        assert status["next_step"] == "ready" and status["assurance_level"] == "authority_face_liveness"
        assert status["certificate"]["assurance_level"] == "authority_face_liveness"
        page.wait(lambda: "（本设备）" in page.text("#device-list"), "this device in 登录设备")
        assert len(page.driver.find_elements("css selector", "#device-list li")) == 1

        # -- a document to sign, started over RPC with this person first
        borrower = stack.person(*BORROWER)
        flow = stack.start(stack.document("iou", IOU), [(person_id, "lender"), (borrower, "borrower")])
        page.open(f"/flows/{flow['flow_id']}")
        page.wait_visible("#sign")
        assert page.text("#turn") == "轮到您签署"
        assert page.text("#required-level") == "本文件要求签署人认证等级：活体检测及权威库证件照人脸比对通过"
        page.draw_signature()
        page.click('#sign-form input[name="method"][value="face"]')
        page.click('#sign-form button[type="submit"]')

        # a photo held up is refused, and the page offers a fresh challenge ...
        refused = perform_challenge(page, "#sign-form", camera, still=True)
        page.wait(lambda: page.text('#sign-form [data-error-for="frames"]'), "the face check's verdict")
        assert page.text('#sign-form [data-error-for="frames"]') == "活体检测未通过：请正对摄像头，按提示转头"
        assert stack.rpc.signing.get_flow(flow_id=flow["flow_id"])["parties"][0]["signed_at"] is None
        # ... which the person performs live: signed by face
        perform_challenge(page, "#sign-form", camera, previous=refused)
        page.wait(lambda: page.text("#turn") == "等待借款人签署", "the signature by face to count")
        signed = stack.rpc.signing.get_flow(flow_id=flow["flow_id"])
        assert signed["parties"][0]["willingness_method"] == "face" and signed["parties"][0]["signed_at"]
        assert signed["parties"][0]["assurance_level"] == "authority_face_liveness"

        # -- 登录设备: another device (a session made over RPC, its cookie in a second browser), ended from here
        other = session_over_rpc(stack, LENDER[2])
        device = Page(browser(tmp_path / "downloads-other"), stack.gateway_url)
        try:
            device.open("/verify")  # a page of the site, for the cookie's origin
            device.driver.add_cookie({"name": COOKIE, "value": other, "path": "/", "httpOnly": True,
                                      "sameSite": "Strict"})
            device.open("/")
            device.wait_visible("#ready")
            # and idle: its own 登录设备 list loaded (a request still in flight when the session ends gets
            # the 403 on this page, which then says why, and the reload below would find no cookie)
            device.wait(lambda: "iPhone" in device.text("#device-list"), "the device's own 登录设备 list")
            page.open("/")
            page.wait(lambda: "iPhone" in page.text("#device-list"), "the other device in 登录设备")
            page.click("#revoke-others")
            page.wait(lambda: page.text("#devices-done") == "已退出其他 1 台设备。",
                      "the other device to be logged out")
            page.wait(lambda: "iPhone" not in page.text("#device-list"), "the list without the other device")
            assert http_status(stack, other) == (403, {"error": {"code": "forbidden", "message": "session_revoked"}})
            assert http_status(stack, token)[0] == 200
            # the other device, on its next request, is logged out and says why; the 403 cleared its cookie
            device.open("/")
            device.wait_visible("#login-form")
            assert device.text("#status") == "您已退出登录（或已在其他设备上被退出），请重新登录"
            assert device.session_cookie() is None
        finally:
            device.driver.quit()

        # -- 退出登录: this session ends at identity, not only in the tab
        page.click("#logout")
        page.wait(lambda: page.visible("#login-form") and page.driver.current_url == stack.gateway_url + "/",
                  "the login page after logging out")
        assert page.session_cookie() is None  # the logout's answer cleared it
        assert not page.visible("#logout")
        assert http_status(stack, token) == (403, {"error": {"code": "forbidden", "message": "session_revoked"}})
    finally:
        page.driver.quit()
