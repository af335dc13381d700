"""Console provider: the development outbox file."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.notify.providers import PermanentSmsError, SmsProvider, build_provider
from services.notify.providers.console import ConsoleSettings, ConsoleSmsProvider, read_outbox
from services.notify.sms_templates import SmsTemplateCatalog

CATALOG = SmsTemplateCatalog.load()
REPO_ROOT = Path(__file__).resolve().parents[3]


def send(provider, phone="13812345678", code="042817"):
    message = CATALOG.render("phone_code", {"code": code, "minutes": "5"})
    return provider.send(phone, message.template, message.params, message.text)


def test_each_message_is_one_json_line_with_what_the_demo_needs(tmp_path):
    outbox = tmp_path / "sms" / "outbox.jsonl"
    provider = ConsoleSmsProvider(ConsoleSettings(outbox_path=str(outbox), sign_name="电子签"))
    assert isinstance(provider, SmsProvider)
    first = send(provider)
    second = send(provider, phone="+8613900001111", code="777777")

    lines = outbox.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["message_id"] == first.vendor_message_id
    assert record["phone"] == "13812345678"
    assert record["phone_masked"] == "138****5678"
    assert record["template"] == "phone_code"
    assert record["template_version"] == 1
    assert record["params"] == {"code": "042817", "minutes": "5"}
    assert record["text"] == "【电子签】您的手机验证码为042817，5分钟内有效。如非本人操作，请忽略本短信。"
    assert [r["message_id"] for r in read_outbox(outbox)] == [first.vendor_message_id, second.vendor_message_id]
    assert read_outbox(outbox)[1]["phone"] == "13900001111"


def test_invalid_number_is_permanent_and_writes_nothing(tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    provider = ConsoleSmsProvider(ConsoleSettings(outbox_path=str(outbox)))
    with pytest.raises(PermanentSmsError):
        send(provider, phone="12345")
    assert read_outbox(outbox) == []


def test_build_provider_defaults_to_console(tmp_path):
    provider = build_provider({"console": {"outbox_path": str(tmp_path / "o.jsonl")}})
    assert provider.name == "console"
    send(provider)
    assert len(read_outbox(tmp_path / "o.jsonl")) == 1


WRITER = textwrap.dedent("""
    import sys
    from services.notify.providers.console import ConsoleSettings, ConsoleSmsProvider
    from services.notify.sms_templates import SmsTemplateCatalog
    outbox, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    catalog = SmsTemplateCatalog.load()
    provider = ConsoleSmsProvider(ConsoleSettings(outbox_path=outbox))
    # A long title makes each line several hundred bytes, so interleaving would show.
    for i in range(count):
        m = catalog.render("willingness_code", {"document_title": "个人房屋租赁合同" + str(worker),
                                                 "code": "%06d" % (worker * 10000 + i), "minutes": "5"})
        provider.send("1390000%04d" % worker, m.template, m.params, m.text)
""")


def test_concurrent_writers_do_not_interleave_lines(tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    workers, count = 4, 150
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(outbox), str(w), str(count)], cwd=REPO_ROOT)
        for w in range(workers)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0] * workers

    raw_lines = outbox.read_text(encoding="utf-8").splitlines()
    assert len(raw_lines) == workers * count
    records = [json.loads(line) for line in raw_lines]  # any interleaving breaks the JSON
    for w in range(workers):
        codes = sorted(r["params"]["code"] for r in records if r["phone"] == "1390000%04d" % w)
        assert codes == ["%06d" % (w * 10000 + i) for i in range(count)]


def test_unknown_provider_or_setting_is_a_named_configuration_error(tmp_path):
    from services.common.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        build_provider({"provider": "carrier-pigeon"})
    assert (err.value.field, err.value.rule) == ("sms.provider", "one_of")
    with pytest.raises(InvalidInput) as err:
        build_provider({"provider": "console", "console": {"outbox": "x"}})
    assert err.value.rule == "unknown_setting"
    with pytest.raises(InvalidInput) as err:
        build_provider({"provider": "tencent", "tencent": {"secret_id": "a"}})
    assert (err.value.field, err.value.rule) == ("sms.tencent.secret_key", "required")


def test_check_finds_a_message_by_its_reference_and_is_sure_of_one_it_never_wrote(tmp_path):
    import datetime as dt

    from services.notify.providers import HandoverState

    provider = ConsoleSmsProvider(ConsoleSettings(outbox_path=str(tmp_path / "outbox.jsonl")))
    since = dt.datetime.now(dt.timezone.utc)
    assert provider.check("13812345678", "msg-1", since).state is HandoverState.NOT_ACCEPTED  # no file yet
    message = CATALOG.render("phone_code", {"code": "042817", "minutes": "5"})
    sent = provider.send("13812345678", message.template, message.params, message.text, reference="msg-1")
    found = provider.check("13812345678", "msg-1", since)
    assert (found.state, found.vendor_message_id) == (HandoverState.ACCEPTED, sent.vendor_message_id)
    assert found.accepted_at is not None and found.accepted_at >= since
    assert provider.check("13812345678", "msg-2", since).state is HandoverState.NOT_ACCEPTED


def test_the_outbox_moves_with_the_data_directory_unless_a_file_is_named(tmp_path, monkeypatch):
    from services.common.config import load_config
    from services.common.errors import InvalidInput
    from services.notify.settings import console_outbox

    monkeypatch.delenv("ESIGN_SMS_OUTBOX", raising=False)
    monkeypatch.delenv("ESIGN_SMS_PROVIDER", raising=False)
    monkeypatch.setenv("ESIGN_DATA_DIR", str(tmp_path / "data"))
    assert console_outbox(load_config("notify")) == tmp_path / "data" / "sms-outbox.jsonl"  # notify's config.yaml
    monkeypatch.setenv("ESIGN_SMS_OUTBOX", str(tmp_path / "elsewhere.jsonl"))
    assert console_outbox(load_config("notify")) == tmp_path / "elsewhere.jsonl"
    assert console_outbox({"SMS": {"PROVIDER": "console", "OUTBOX_FILE": "sms.jsonl"}}) == REPO_ROOT / "sms.jsonl"
    assert console_outbox({"SMS": {"PROVIDER": "tencent"}}) is None  # a real vendor: no file to read codes from
    with pytest.raises(InvalidInput) as err:
        build_provider({"provider": "console", "console": {"sign_name": "电子签"}})
    assert (err.value.field, err.value.rule) == ("sms.console.outbox_path", "required")
