"""A signed IOU's 还款确认 in a real browser (headless chromium) against the
whole stack: the lender opens the IOU, confirms a part repayment in its
借款情况 card, lands on the 还款确认书 made for it, signs it with handwriting
and an SMS code, and back on the IOU sees it part repaid with the
repayment in its history; the borrower's page shows the same and offers 展期
but not 还款确认."""
from __future__ import annotations

import pytest

from services.common.clock import today_in_china
from tests.support.browser import Page, browser, log_in, sign_by_sms
from tests.support.stack import BORROWER, LENDER, people, signed_iou

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_the_lender_confirms_a_repayment_on_the_iou_page(stack, tmp_path):
    lender, borrower = people(stack)
    flow_id = signed_iou(stack, lender, borrower, amount="3000")
    a = Page(browser(tmp_path / "downloads-a"), stack.gateway_url)
    b = None
    try:
        a.open("/")
        log_in(a, stack, LENDER[2])
        a.wait_visible("#ready")
        a.open(f"/flows/{flow_id}")
        a.wait_visible("#loan")
        assert a.text("#loan-summary").startswith("未还清：未还本金 ¥3000.00")
        a.click("#repay summary")
        a.type("#repay-amount", "3000.01")
        a.click('#repay-form button[type="submit"]')
        a.wait(lambda: a.text('#repay-form [data-error-for="amount"]'), "the amount's error")
        a.type("#repay-amount", "1200")
        a.choose("#repay-method", "微信转账")
        a.click('#repay-form button[type="submit"]')
        a.wait(lambda: "/flows/" in a.driver.current_url and flow_id not in a.driver.current_url, "the statement")
        a.wait_visible("#statement-of")
        assert "的还款确认书" in a.text("#statement-text")
        sign_by_sms(a, stack, LENDER[2])
        a.wait(lambda: a.text("#state") == "已生效", "the statement to be signed")
        a.click("#statement-text a")
        a.wait(lambda: a.driver.current_url.endswith(f"/flows/{flow_id}"), "back to the IOU")
        a.wait(lambda: a.text("#loan-summary").startswith("部分还款：未还本金 ¥1800.00"), "the loan to follow")
        assert a.text("#state") == "已生效（部分还款）"
        assert f"{today_in_china().isoformat()} 收到还款 ¥1200.00（微信转账）" in a.text("#loan-history")

        b = Page(browser(tmp_path / "downloads-b"), stack.gateway_url)
        b.open("/")
        log_in(b, stack, BORROWER[2])
        b.wait_visible("#ready")
        b.open(f"/flows/{flow_id}")
        b.wait(lambda: b.text("#loan-summary").startswith("部分还款"), "the borrower's view of the loan")
        assert not b.visible("#repay") and b.visible("#extend")
        b.click("#loan-history a")
        b.wait_visible("#statement-of")  # the borrower reads the lender's statement, and may not sign it
        b.wait(lambda: b.text("#state") == "已生效", "the statement's state")
        assert not b.visible("#sign")
    finally:
        for page in (a, b):
            if page is not None:
                page.driver.quit()
