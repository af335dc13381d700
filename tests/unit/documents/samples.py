"""Valid inputs of every template, changed per test with keyword arguments.

ID numbers: 11010519491231002X is the worked example of GB 11643-1999;
110105199003071239 has check character 9 by the ISO 7064 MOD 11-2 weights:
1·7+1·9+0·10+1·5+0·8+5·4+1·2+9·1+9·6+0·3+0·7+3·9+0·10+7·5+1·8+2·4+3·2 = 190,
190 mod 11 = 3, and position 3 of "10X98765432" is 9.
"""
import datetime as dt

TODAY = dt.date(2026, 11, 28)
LENDER = {"name": "张三", "id_number": "11010519491231002X", "phone": "13800138000"}
BORROWER = {"name": "李𠮷", "id_number": "110105199003071239", "phone": "13900139000"}
HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4


def iou_values(**changes):
    values = {
        "initiator_role": "借款方",
        "lender": dict(LENDER),
        "borrower": dict(BORROWER),
        "amount": "10005",
        "purpose": "家庭装修",
        "annual_rate": "3.65",
        "start_date": "2026-01-31",
        "repayment_date": "2026-04-15",
        "repayment_method": "按月付息、到期还本",
        "remark": "按期还款",
        "images": [{"sha256": HASH_A, "caption": "转账截图"}],
    }
    values.update(changes)
    return values


def receipt_values(**changes):
    values = {
        "initiator_role": "付款人",
        "payee": dict(LENDER),
        "payer": dict(BORROWER),
        "amount": "1409.50",
        "reason": "押金",
        "received_at": "2026-11-28T09:30:00",
        "remark": "十二月押金",
    }
    values.update(changes)
    return values


def iou_contract_values(**changes):
    values = {
        "initiator_role": "出借方",
        "lender": dict(LENDER),
        "borrower": dict(BORROWER),
        "amount": "107000.53",
        "purpose": "生产经营需要",
        "annual_rate": "0",
        "start_date": "2026-12-01",
        "repayment_date": "2027-12-01",
        "repayment_method": "一次性还本付息",
        "dispute_resolution": "向借款人住所地人民法院起诉",
    }
    values.update(changes)
    return values


def rental_values(**changes):
    values = {
        "initiator_role": "租客",
        "landlord": dict(LENDER),
        "tenant": dict(BORROWER),
        "address": "北京市朝阳区某路1号院2号楼301室",
        "building_area": "89.5",
        "decoration": "精装修",
        "furnishings": [
            {"name": "空调", "count": 2},
            {"name": "沙发", "count": 1},
            {"name": "床", "count": 1},
            {"name": "电视", "count": 0},
        ],
        "lease_start": "2027-01-01",
        "lease_end": "2027-12-31",
        "monthly_rent": "6500",
        "payment_cycle": "季付",
        "payment_day": 5,
        "deposit": "6500",
        "tenant_fees": ["电费", "水费", "垃圾清运费"],
        "renovation_allowed": False,
        "sublet_allowed": True,
        "renewal_notice_days": 30,
        "property_photos": [{"sha256": HASH_A, "caption": "客厅"}],
        "facility_photos": [],
        "ownership_proof": [HASH_B],
    }
    values.update(changes)
    return values


def employment_values(**changes):
    values = {
        "initiator_role": "用人单位",
        "employer_name": "某某科技有限公司",
        "employer_credit_code": "91110108MA01234567",
        "employer_address": "北京市海淀区某路8号",
        "employer_agent": dict(LENDER),
        "employee": dict(BORROWER),
        "contract_type": "固定期限",
        "start_date": "2027-01-01",
        "end_date": "2029-12-31",
        "probation_months": 3,
        "position": "软件工程师",
        "work_location": "北京市",
        "working_hours": "标准工时制",
        "monthly_salary": "20000",
        "pay_day": 10,
    }
    values.update(changes)
    return values


def repayment_values(**changes):
    """A 还款确认书 as signing makes it (the figures are signing's: services/signing/loan.py)."""
    values = {
        "initiator_role": "出借方",
        "lender": dict(LENDER),
        "borrower": dict(BORROWER),
        "iou_reference": "借条（2026年1月31日签署完成，文件 SHA-256 0123456789abcdef…）",
        "amount": "3000",
        "repaid_on": "2026-11-20",
        "method": "微信转账",
        "interest_part": "87.50",
        "principal_part": "2912.50",
        "principal_after": "7092.50",
    }
    values.update(changes)
    return values


def extension_values(**changes):
    """A 借款展期协议 as signing makes it, agreed on TODAY."""
    values = {
        "initiator_role": "借款方",
        "lender": dict(LENDER),
        "borrower": dict(BORROWER),
        "iou_reference": "借条（2026年1月31日签署完成，文件 SHA-256 0123456789abcdef…）",
        "principal_outstanding": "7092.50",
        "original_repayment_date": "2026-12-15",
        "agreed_on": TODAY.isoformat(),
        "repayment_date": "2027-03-15",
        "annual_rate": "3.65",
    }
    values.update(changes)
    return values


VALID = {
    "iou": iou_values,
    "iou_repayment": repayment_values,
    "iou_extension": extension_values,
    "receipt": receipt_values,
    "iou_contract": iou_contract_values,
    "rental": rental_values,
    "employment": employment_values,
}
