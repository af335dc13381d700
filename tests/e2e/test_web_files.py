"""我的文件 in a real browser (headless chromium, tests/support/browser.py)
against the whole stack: the lender logs in, opens 我的文件, finds the IOU by
the borrower's name among their documents, opens it and downloads the
signed PDF, which is the flow's own (same SHA-256); a draft opens the editor
again to go on with it."""
from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest

from services.common.clock import today_in_china
from tests.support.browser import Page, browser, log_in
from tests.support.stack import BORROWER, LENDER, UNREGISTERED, Http, iou_values, party, people, signed_iou

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_find_the_iou_by_the_counterpartys_name_open_it_and_download_it(stack, tmp_path):
    lender, borrower = people(stack)
    due = (today_in_china() + timedelta(days=30)).isoformat()  # not overdue: 已生效
    flow_id = signed_iou(stack, lender, borrower, amount="8800", repayment_date=due)
    # a draft of the lender's with someone else, newer than the IOU
    draft = Http(stack, stack.tokens[lender]).json("POST", "/documents", {
        "template_id": "iou", "values": iou_values(borrower=party(UNREGISTERED), amount="120")}, expect=201)
    downloads = tmp_path / "downloads"
    page = Page(browser(downloads), stack.gateway_url)
    try:
        page.open("/")
        log_in(page, stack, LENDER[2])
        page.wait_visible("#ready")
        page.click('#ready a[href="/files"]')
        page.wait(lambda: len(page.driver.find_elements("css selector", "#files li")) == 2, "both documents")
        rows = [li.text for li in page.driver.find_elements("css selector", "#files li")]
        assert rows[0].startswith("草稿 借条") and "借款人：赵*" in rows[0] and "¥120.00" in rows[0]
        assert rows[1].startswith("已生效 借条") and "借款人：李*" in rows[1] and "¥8800.00" in rows[1]

        page.type("#files-q", BORROWER[0][0])  # 李
        page.click('#files-form button[type="submit"]')
        page.wait(lambda: len(page.driver.find_elements("css selector", "#files li")) == 1, "the search")
        assert page.find("#files li").get_attribute("data-id") == flow_id
        page.click("#files li a")
        page.wait(lambda: page.driver.current_url.endswith(f"/flows/{flow_id}"), "the flow page")
        page.wait(lambda: page.text("#state") == "已生效", "the IOU's state")
        page.wait_visible("#pdf-link a")
        page.click("#pdf-link a")
        pdf = page.wait(lambda: next(iter(downloads.glob("*.pdf")), None), "the PDF download")
        page.wait(lambda: pdf.stat().st_size > 0 and not list(downloads.glob("*.crdownload")), "the download to end")
        signed = stack.rpc.signing.get_signed_pdf(flow_id=flow_id)
        assert hashlib.sha256(pdf.read_bytes()).hexdigest() == signed["sha256"]
        assert pdf.read_bytes() == base64.b64decode(signed["pdf"])

        # the draft opens the editor on that draft
        page.open("/files")
        page.wait(lambda: len(page.driver.find_elements("css selector", "#files li")) == 2, "the list again")
        page.click(f'#files li[data-id="{draft["document_id"]}"] a')
        page.wait_visible("#document-form")
        assert page.find('[data-template="iou"]').get_attribute("aria-checked") == "true"
        assert "继续编辑草稿" in page.text("#template-description")
    finally:
        page.driver.quit()
