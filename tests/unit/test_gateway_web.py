"""The web pages as the gateway serves them: each page route answers HTML
with a strict Content-Security-Policy, assets have the right content types,
nothing inline would be blocked by that policy, and unknown paths are 404.
The pages are composed from one layout: what is checked is the page as sent."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from services.common.reasons import Reason
from services.gateway.app import create_app
from services.gateway.web import PAGES as PAGE_FILES
from services.gateway.web import WEB_DIR, page_html

PAGES = {"/": "index.html", "/new": "new.html", "/flows/3f1c2a9e-0000-4000-8000-000000000001": "flow.html",
         "/verify": "verify.html", "/receipts/new?invite=eyJ2IjoxfQ.c2ln": "receipt.html", "/files": "files.html"}


class NoRpc:
    """The pages need no service: any RPC would be a bug in this test."""

    def call(self, service, method, **kwargs):
        raise AssertionError(f"unexpected RPC {service}.{method}")

    def close(self):
        pass


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    app = create_app({"AMQP_URI": "memory://", "DATA_DIR": str(tmp_path_factory.mktemp("gw")),
                      "SECRETS": {"GENERATE_MISSING": True}}, rpc=NoRpc())
    with TestClient(app) as client:
        yield client


def csp(response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.parametrize("path", PAGES)
def test_each_page_is_html_with_a_strict_policy(http, path):
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == page_html(PAGES[path])
    policy = csp(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert set(policy["frame-src"]) == {"'self'", "blob:"}  # the PDF preview
    assert not any("unsafe" in source for sources in policy.values() for source in sources)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="zh-CN">' in response.text and 'name="viewport"' in response.text


@pytest.mark.parametrize("name, media_type", [
    ("api.js", "text/javascript; charset=utf-8"), ("start.js", "text/javascript; charset=utf-8"),
    ("new.js", "text/javascript; charset=utf-8"), ("flow.js", "text/javascript; charset=utf-8"),
    ("verify.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8"),
    ("editor.js", "text/javascript; charset=utf-8"), ("receipt.js", "text/javascript; charset=utf-8"),
    ("camera.js", "text/javascript; charset=utf-8"), ("facecheck.js", "text/javascript; charset=utf-8"),
])
def test_assets_have_their_content_type(http, name, media_type):
    response = http.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_qr_code_is_allowed_as_a_data_image(http):
    """我的二维码 shows the API's SVG as a data: URL; the receipt page opens without an
    invite too (it says the link is incomplete) and never from another page's frame."""
    assert "data:" in csp(http.get("/"))["img-src"]
    bare = http.get("/receipts/new")
    assert bare.status_code == 200 and bare.content == page_html("receipt.html")
    assert csp(bare)["frame-ancestors"] == ["'none'"]
    assert bare.headers["referrer-policy"] == "no-referrer"  # the invite token stays on this site


def test_the_receipt_page_reuses_the_document_editor():
    """One form builder for /new and /receipts/new: both import it, neither has its own."""
    for page in ("new.js", "receipt.js"):
        script = (WEB_DIR / page).read_text("utf-8")
        assert 'from "./editor.js"' in script and "BUILDERS" not in script, page
    assert "export function editDocument" in (WEB_DIR / "editor.js").read_text("utf-8")


@pytest.mark.parametrize("path", ["/nowhere", "/static/missing.js", "/static/index.html", "/static/..%2Fweb.py",
                                  "/static/.hidden.js", "/static/layout.html", "/static/editor.html",
                                  "/static/camera.html", "/flows", "/flows/a/b", "/receipts",
                                  "/receipts/other"])
def test_unknown_paths_are_404(http, path):
    assert http.get(path).status_code == 404


def test_the_api_is_still_json(http):
    assert http.get("/openapi.json").json()["paths"]["/api/v1/flows/{flow_id}"]
    assert "/flows/{flow_id}" not in http.get("/openapi.json").json()["paths"]  # pages stay out of the API docs


class Inline(HTMLParser):
    """What a page has that the policy would block or that is missing."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.assets: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in attributes:
            if name.startswith("on") or name == "style":
                self.problems.append(f"inline {name} on <{tag}>")
        if tag == "script":
            if "src" not in attributes:
                self.problems.append("inline <script>")
            else:
                self.assets.append(attributes["src"])
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.assets.append(attributes["href"])
        if tag == "style":
            self.problems.append("inline <style>")


@pytest.mark.parametrize("page", sorted(set(PAGES.values())))
def test_pages_have_nothing_inline_and_their_assets_exist(page):
    parser = Inline()
    parser.feed(page_html(page).decode("utf-8"))
    assert parser.problems == []
    assert parser.assets, page
    for asset in parser.assets:
        assert asset.startswith("/static/") and (WEB_DIR / asset.removeprefix("/static/")).is_file(), asset


def test_modules_import_only_files_that_exist():
    for script in WEB_DIR.glob("*.js"):
        for target in re.findall(r'from\s+"\./([\w.-]+)"', script.read_text("utf-8")):
            assert (WEB_DIR / target).is_file(), f"{script.name} imports {target}"
        assert "innerHTML" not in script.read_text("utf-8"), f"{script.name}: build DOM with el(), not innerHTML"


class Outline(HTMLParser):
    """How often each tag occurs, every id, and the title's text."""

    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.ids: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.ids += [value for name, value in attrs if name == "id"]
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def outline(page: str) -> Outline:
    parser = Outline()
    parser.feed(page_html(page).decode("utf-8"))
    return parser


def test_every_route_serves_a_composed_page():
    assert set(PAGES.values()) == set(PAGE_FILES)
    for page in PAGE_FILES:
        html = page_html(page).decode("utf-8")
        assert html.startswith("<!doctype html>\n") and html.count("<!doctype") == 1, page
        assert "{{" not in html and "<!-- include" not in html, page  # every placeholder and include filled
        assert f'<script type="module" src="/static/{PAGE_FILES[page].script}"></script>' in html, page


@pytest.mark.parametrize("page", sorted(PAGE_FILES))
def test_every_page_has_one_header_one_main_and_its_own_title(page):
    parsed = outline(page)
    for tag in ("html", "head", "body", "header", "main", "title", "nav"):
        assert parsed.tags.get(tag) == 1, (page, tag)
    assert parsed.title == f"电子签 · {PAGE_FILES[page].title}"
    assert len(parsed.ids) == len(set(parsed.ids)), f"{page}: an id twice"  # the fragments are filled per use
    others = {outline(other).title for other in PAGE_FILES if other != page}
    assert parsed.title not in others


def test_the_new_and_receipt_pages_share_the_editor_markup():
    """editor.js finds the same form and preview on both, each with its own hint."""
    for page in ("new.html", "receipt.html"):
        parsed = outline(page)
        assert {"document-form", "template-title", "fields", "preview", "pdf", "order", "flow-form"} <= set(parsed.ids)
    assert "您作为发起方" in page_html("new.html").decode("utf-8")
    assert "按实名信息自动填写" in page_html("receipt.html").decode("utf-8")


class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def having(self, tag: str, **wanted) -> list[dict]:
        """Elements ``tag`` with these attributes (``data_x`` is data-x; True: present, any value)."""
        def fits(attributes: dict, key: str, value) -> bool:
            key = key.replace("_", "-")
            return key in attributes if value is True else attributes.get(key) == value

        return [attributes for name, attributes in self.elements
                if name == tag and all(fits(attributes, key, value) for key, value in wanted.items())]


def elements(page: str) -> Elements:
    parser = Elements()
    parser.feed(page_html(page).decode("utf-8"))
    return parser


def test_the_start_page_proves_the_face_live_without_an_id_portrait():
    """人脸核身: the camera fragment (preview, challenge, 开始拍摄), a selfie input only as the
    hidden fallback, no ID-portrait upload; the certificate, ready card with the level, 登录设备."""
    page = elements("index.html")
    ids = {attributes.get("id") for _tag, attributes in page.elements}
    assert {"face-form", "face-start", "face-note", "certificate-take", "frozen", "assurance", "devices",
            "device-list", "revoke-others"} <= ids
    assert "id-portrait" not in ids and not page.having("input", name="id_portrait")
    assert len(page.having("video")) == 1 and "muted" in page.having("video")[0]
    assert len(page.having("button", type="button", data_capture=True)) == 1
    [selfie] = page.having("input", type="file")
    assert selfie["capture"] == "user" and selfie["name"] == "selfie"
    [upload] = page.having("div", data_upload=True)
    assert "hidden" in upload  # shown only where uploads are allowed
    text = page_html("index.html").decode("utf-8")
    assert "人脸核身" in text and "证件照" in text and "身份证人像面" not in text
    assert [li for li in page.having("li") if li.get("data-step")] == [
        {"data-step": "phone"}, {"data-step": "face"}, {"data-step": "certificate"}]


def test_each_willingness_of_the_flow_page_has_its_camera():
    """Signing, the void request and the void confirmation: SMS code or the live face, each with
    its own camera fragment (ids made from the include's prefix), and the flow's dispute badge."""
    page = elements("flow.html")
    assert len(page.having("input", type="radio", name="method", value="face")) == 3
    assert len(page.having("video")) == 3 and len(page.having("button", type="button", data_capture=True)) == 3
    assert {a["id"] for a in page.having("input", type="file")} == {"sign-selfie", "void-selfie", "void-confirm-selfie"}
    assert {a["id"] for a in page.having("input", name="code")} == {"sign-code", "void-code", "void-confirm-code"}
    ids = {attributes.get("id") for _tag, attributes in page.elements}
    assert {"dispute", "required-level"} <= ids


def test_the_header_logs_out():
    for page in PAGE_FILES:
        [button] = elements(page).having("button", id="logout")
        assert "hidden" in button, page
    assert ">退出登录</button>" in page_html("index.html").decode("utf-8")


def test_the_pages_keep_no_session_token():
    """The session is the gateway's HttpOnly cookie (services/gateway/session_cookie.py),
    which every tab shares: no script stores, reads or sends a token."""
    for script in WEB_DIR.glob("*.js"):
        text = script.read_text("utf-8")
        for word in ("Authorization", "Bearer", "esign.token", "document.cookie"):
            assert word not in text, f"{script.name}: {word}"


def _object_keys(script: str, name: str) -> set[str]:
    body = re.search(rf"const {name} = \{{(.*?)\n\}};", script, re.S)
    assert body, name
    return set(re.findall(r'^\s*"?([\w: ]+?)"?:\s', body.group(1), re.M))


def _reasons_said(script: str) -> dict[str, str]:
    """api.js ``REASONS``, in its order: reason -> what the pages say."""
    body = re.search(r"^const REASONS = \{\n(.*?)^\};", script, re.S | re.M)
    assert body, "REASONS"
    lines = [line.strip() for line in body.group(1).splitlines() if not line.strip().startswith("//")]
    entries = [re.fullmatch(r'([a-z_]+): "([^"]+)",', line) for line in lines]
    assert all(entries), [line for line, entry in zip(lines, entries, strict=True) if not entry]
    return {entry.group(1): entry.group(2) for entry in entries}


def test_every_reason_the_pages_meet_is_said_in_chinese():
    """api.js says every reason services/common/reasons.py lists, in its order (to
    read the two side by side), in Chinese, and no other; the authority's refusals
    and the liveness reasons have their Chinese words too."""
    script = (WEB_DIR / "api.js").read_text("utf-8")
    said = _reasons_said(script)
    assert [reason.value for reason in Reason if reason not in said] == []
    assert [key for key in said if key not in set(Reason)] == []  # not_registered, "person not found: ..."
    assert list(said) == [reason.value for reason in Reason]
    assert [key for key, text in said.items() if not re.search(r"[\u4e00-\u9fff]", text)] == []
    assert {"authority_mismatch", "authority_no_record", "authority_invalid_id", "authority_invalid_name",
            "authority_no_photo", "liveness_required"} <= _object_keys(script, "SENTENCES")
    assert "identity_authority" in _object_keys(script, "SYSTEMS")
    assert "session_(required|revoked|expired|invalid)|account_frozen" in script  # those log the tab out
    faces = _object_keys((WEB_DIR / "facecheck.js").read_text("utf-8"), "REASONS")
    assert {"static_frames", "no_motion", "challenge_not_performed", "identity_changed", "no_face",
            "multiple_faces", "mirrored_frames", "face_mismatch"} <= faces


def test_metrics_are_not_served_on_the_public_port(http):
    # they are on the gateway's metrics port (GATEWAY_METRICS_PORT), for Prometheus only
    assert http.get("/metrics").status_code == 404
