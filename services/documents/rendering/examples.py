"""Example contents shaped like real documents, for tests and ``bench/render.py``:
a typical IOU (借条, one page) and a long personal rental contract (租房合同,
several pages, a schedule that runs over a page break). Values are invented."""
from __future__ import annotations

import datetime

from services.documents.rendering.content import (
    AttachmentEntry,
    DocumentContent,
    Party,
    ScheduleTable,
    Section,
)


def iou_example(lender_name: str = "王䶮", borrower_name: str = "李𠮷祥") -> DocumentContent:
    """A lump-sum IOU between two people; the default names carry a CJK Ext A
    and an Ext B character, the cases a BMP-only font would lose."""
    return DocumentContent(
        title="借条",
        document_id="IOU-2024-000123",
        document_date=datetime.date(2024, 3, 1),
        parties=(
            Party("出借方", lender_name, "1101**********002X", "138****1234", "sig_lender"),
            Party("借款方", borrower_name, "4403**********1234", "139****5678", "sig_borrower"),
        ),
        sections=(
            Section(
                heading="借款信息",
                rows=(
                    ("借款金额", "¥10,005.00"),
                    ("借款用途", "家庭装修"),
                    ("年利率", "3.45%（未超过合同成立时一年期LPR 3.45%的四倍）"),
                    ("借款日期", "2024年3月1日"),
                    ("还款日期", "2025年3月1日"),
                    ("还款方式", "一次性还本付息"),
                ),
                paragraphs=(
                    "借款方承诺按上述约定按期足额归还借款本息。如逾期未还，出借方有权依法追究。",
                ),
            ),
        ),
        amount_label="借款金额",
        amount_words="人民币壹万零伍元整",
        amount_figures="¥10,005.00",
        schedule=ScheduleTable(
            columns=("期数", "还款日", "本金（元）", "利息（元）", "合计（元）"),
            rows=(("1", "2025-03-01", "10,005.00", "345.17", "10,350.17"),),
            note="计息方式：实际天数/365；每笔款项四舍五入至分。",
        ),
        remark="现金交付，双方确认无误。",
    )


def rental_example(months: int = 36, photos: tuple[bytes | None, ...] = ()) -> DocumentContent:
    """A rental contract with ``months`` monthly rent rows and one attachment per photo."""
    start = datetime.date(2024, 1, 31)
    rows = []
    for n in range(months):
        year, month = divmod(start.month - 1 + n, 12)
        rows.append((str(n + 1), f"{start.year + year}-{month + 1:02d}-05", "4,500.00", "租金"))
    attachments = tuple(
        AttachmentEntry(sha256=f"{n:02x}" * 32, label=f"房屋照片 {n + 1}", thumbnail_jpeg=photo)
        for n, photo in enumerate(photos)
    ) or (AttachmentEntry(sha256="ab" * 32, label="房屋所有权证明"),)
    return DocumentContent(
        title="个人房屋租赁合同",
        document_id="RENT-2024-000042",
        document_date=datetime.date(2024, 1, 20),
        parties=(
            Party("出租方（房东）", "赵德明", "3101**********4321", "137****0001", "sig_landlord"),
            Party("承租方（租客）", "钱𩸽", "3201**********8765", "136****0002", "sig_tenant"),
        ),
        sections=(
            Section(
                heading="一、房屋信息",
                rows=(
                    ("房屋地址", "上海市徐汇区漕溪北路 88 号 3 号楼 1201 室"),
                    ("建筑面积", "89.5 平方米"),
                    ("装修情况", "精装修"),
                    ("家具家电", "床 2 张、冰箱 1 台、电视 1 台、洗衣机 1 台、"
                                 "空调 3 台、热水器 1 台、宽带 1 条、书桌 1 张"),
                ),
            ),
            Section(
                heading="二、租期及费用",
                rows=(
                    ("租赁期限", f"自 2024年1月31日 起，共 {months} 个月"),
                    ("月租金", "人民币肆仟伍佰元整（¥4,500.00）"),
                    ("支付周期", "每月支付一次，于每月 5 日前支付"),
                    ("押金", "人民币玖仟元整（¥9,000.00）"),
                    ("承租方承担费用", "水费、电费、燃气费、宽带费、停车费"),
                ),
            ),
            Section(
                heading="三、承诺约定",
                rows=(
                    ("是否允许装修", "不允许"),
                    ("是否允许转租", "不允许"),
                    ("续租提前通知", "租期届满前 30 日书面通知"),
                ),
                paragraphs=tuple(
                    f"第{n}条　承租方应合理使用房屋及其附属设施，因使用不当造成损坏的，应负责修复或赔偿；"
                    "出租方应保证房屋及设施处于正常可使用和安全的状态。"
                    for n in range(1, 9)
                ),
            ),
        ),
        amount_label="月租金",
        amount_words="人民币肆仟伍佰元整",
        amount_figures="¥4,500.00",
        schedule=ScheduleTable(columns=("期数", "付款日", "金额（元）", "项目"), rows=tuple(rows),
                               caption="租金支付计划", note="付款日遇节假日不顺延。"),
        remark="钥匙两把已交付。",
        attachments=attachments,
    )
