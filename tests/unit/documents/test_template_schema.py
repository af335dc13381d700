"""A broken template file is refused with an error naming the file and the key."""
import copy

import pytest
import yaml

from services.documents.fields import TemplateDefinitionError
from services.documents.template import TEMPLATES_DIR, Template, load_template_file, load_templates


@pytest.fixture(scope="module")
def iou_definition():
    with open(TEMPLATES_DIR / "iou.v1.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def write(tmp_path, definition, name="iou.v1.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(definition, allow_unicode=True), encoding="utf-8")
    return path


def field_index(definition, name):
    return next(i for i, f in enumerate(definition["fields"]) if f["name"] == name)


def broken(definition, change):
    d = copy.deepcopy(definition)
    change(d)
    return d


def refuse(tmp_path, definition, name="iou.v1.yaml"):
    path = write(tmp_path, definition, name)
    with pytest.raises(TemplateDefinitionError) as err:
        load_template_file(path)
    assert str(path) in str(err.value)
    return err.value


def test_misspelt_rule_key(tmp_path, iou_definition):
    i = field_index(iou_definition, "remark")
    d = broken(iou_definition, lambda d: d["fields"][i].update(max_char=40))
    err = refuse(tmp_path, d)
    assert err.key == f"fields.{i}.max_char" and "unknown key" in str(err)


def test_unknown_field_type(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["fields"][0].update(type="choice"))
    assert refuse(tmp_path, d).key == "fields.0.type"


def test_wrong_value_type(tmp_path, iou_definition):
    i = field_index(iou_definition, "remark")
    d = broken(iou_definition, lambda d: d["fields"][i].update(max_chars="forty"))
    err = refuse(tmp_path, d)
    assert err.key == f"fields.{i}.max_chars" and "expected int" in str(err)


def test_placeholder_naming_nothing(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["sections"][2]["paragraphs"].append({"text": "保证人：{guarantor}"}))
    err = refuse(tmp_path, d)
    assert err.key.startswith("sections.2.paragraphs.") and "{guarantor}" in str(err)


def test_placeholder_of_optional_field_needs_a_condition(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["sections"][2]["paragraphs"].append({"text": "备注：{remark}"}))
    assert "add when" in str(refuse(tmp_path, d))


def test_roles_must_cover_the_initiator_choices(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["roles"][0].update(initiator_choice="担保方"))
    assert refuse(tmp_path, d).key == "roles"


def test_signature_field_names(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["roles"][0].update(signature_field="lender signature"))
    assert refuse(tmp_path, d).key == "roles.0.signature_field"


def test_check_on_missing_field(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d["checks"][0].update(other="loan_date"))
    assert refuse(tmp_path, d).key == "checks.0.other"


def test_schedule_methods_must_match_the_choices(tmp_path, iou_definition):
    i = next(i for i, c in enumerate(iou_definition["computed"]) if c["kind"] == "repayment_schedule")
    d = broken(iou_definition, lambda d: d["computed"][i]["methods"].pop("一次性还本付息"))
    assert refuse(tmp_path, d).key == f"computed.{i}.methods"


def test_missing_key(tmp_path, iou_definition):
    d = broken(iou_definition, lambda d: d.pop("title"))
    assert refuse(tmp_path, d).key == "title"


def test_file_name_must_match_id_and_version(tmp_path, iou_definition):
    err = refuse(tmp_path, iou_definition, name="iou.v2.yaml")
    assert "iou v2" in str(err) and "iou v1" in str(err)
    assert refuse(tmp_path, iou_definition, name="iou.yaml").key == "<file name>"


def test_invalid_yaml(tmp_path):
    path = tmp_path / "iou.v1.yaml"
    path.write_text("id: iou\nfields: [unclosed\n", encoding="utf-8")
    with pytest.raises(TemplateDefinitionError) as err:
        load_template_file(path)
    assert err.value.key == "<yaml>" and str(path) in str(err.value)


def test_two_files_for_one_version(tmp_path, iou_definition):
    write(tmp_path, iou_definition, "iou.v1.yaml")
    write(tmp_path, iou_definition, "iou.v1.yml")
    with pytest.raises(TemplateDefinitionError):
        load_templates(tmp_path)


def test_a_new_version_is_only_a_new_file(tmp_path, iou_definition):
    v2 = broken(iou_definition, lambda d: d.update(version=2, title="借条（新版）"))
    write(tmp_path, iou_definition, "iou.v1.yaml")
    write(tmp_path, v2, "iou.v2.yaml")
    catalog = load_templates(tmp_path)
    assert catalog.get("iou").title == "借条（新版）"
    assert catalog.get("iou", 1).title == "借条"


def test_definition_from_a_database_row(iou_definition):
    # Templates are loaded into the database; the stored mapping parses the same way.
    t = Template(copy.deepcopy(iou_definition), source="templates row 7")
    assert (t.id, t.version) == ("iou", 1)
    with pytest.raises(TemplateDefinitionError) as err:
        Template(broken(iou_definition, lambda d: d.pop("fields")), source="templates row 7")
    assert str(err.value).startswith("templates row 7: fields:")
