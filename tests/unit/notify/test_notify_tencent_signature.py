"""TC3-HMAC-SHA256 against Tencent's published worked example.

The values below are copied from Tencent Cloud's "Signature v3" document
(API 3.0, "TC3-HMAC-SHA256 Signature Method", example of CVM
DescribeInstances in ap-guangzhou): SecretKey Gu5t9xGARNpq86cd98joQYCN3EXAMPLE,
X-TC-Timestamp 1551113065, the JSON payload shown, and the published
intermediate hashes and final signature. Both our signer and the fake
vendor's independent verifier must reproduce them.
"""
from services.notify.providers.tencent_signature import credential_date, sign_request
from tests.support.fake_tencent_sms import tc3_expected_signature

DOC_SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_TIMESTAMP = 1551113065
DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_HASHED_PAYLOAD = "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
DOC_HASHED_CANONICAL_REQUEST = "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
DOC_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
DOC_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"}


def _signed():
    return sign_request(
        secret_id=DOC_SECRET_ID,
        secret_key=DOC_SECRET_KEY,
        service="cvm",
        timestamp=DOC_TIMESTAMP,
        headers=DOC_HEADERS,
        signed_headers=["content-type", "host"],
        payload=DOC_PAYLOAD,
    )


def test_canonical_request_matches_the_published_one():
    assert _signed().canonical_request == (
        "POST\n/\n\n"
        "content-type:application/json; charset=utf-8\n"
        "host:cvm.tencentcloudapi.com\n"
        "\n"
        "content-type;host\n"
        + DOC_HASHED_PAYLOAD
    )


def test_string_to_sign_matches_the_published_one():
    assert _signed().string_to_sign == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n" + DOC_HASHED_CANONICAL_REQUEST
    )


def test_signature_and_authorization_match_the_published_ones():
    signed = _signed()
    assert signed.signature == DOC_SIGNATURE
    assert signed.authorization == (
        f"TC3-HMAC-SHA256 Credential={DOC_SECRET_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}"
    )


def test_credential_date_is_the_utc_date_not_beijing_time():
    # 1551113065 is 2019-02-26 00:44:25 in UTC+8; the document warns the scope uses UTC.
    assert credential_date(DOC_TIMESTAMP) == "2019-02-25"


def test_fake_vendor_verifier_reproduces_the_published_signature():
    expected = tc3_expected_signature(
        secret_key=DOC_SECRET_KEY,
        http_method="POST",
        canonical_uri="/",
        canonical_query="",
        header_lines=[("Host", "cvm.tencentcloudapi.com"), ("Content-Type", "application/json; charset=utf-8")],
        request_payload=DOC_PAYLOAD,
        timestamp=str(DOC_TIMESTAMP),
        service="cvm",
    )
    assert expected == DOC_SIGNATURE


def test_signature_depends_on_every_signed_part():
    base = _signed().signature
    changed_payload = sign_request(secret_id=DOC_SECRET_ID, secret_key=DOC_SECRET_KEY, service="cvm",
                                   timestamp=DOC_TIMESTAMP, headers=DOC_HEADERS,
                                   signed_headers=["content-type", "host"], payload=DOC_PAYLOAD + b" ")
    changed_host = sign_request(secret_id=DOC_SECRET_ID, secret_key=DOC_SECRET_KEY, service="cvm",
                                timestamp=DOC_TIMESTAMP, headers={**DOC_HEADERS, "Host": "sms.tencentcloudapi.com"},
                                signed_headers=["content-type", "host"], payload=DOC_PAYLOAD)
    changed_key = sign_request(secret_id=DOC_SECRET_ID, secret_key=DOC_SECRET_KEY + "x", service="cvm",
                               timestamp=DOC_TIMESTAMP, headers=DOC_HEADERS,
                               signed_headers=["content-type", "host"], payload=DOC_PAYLOAD)
    assert len({base, changed_payload.signature, changed_host.signature, changed_key.signature}) == 4
