"""A local stand-in for Tencent Cloud FaceID (人脸核身, API 2018-03-01) for tests.

It serves the two actions the platform uses, ``IdCardVerification`` and
``ImageRecognitionV2``, on 127.0.0.1 (a free port), checks each request the
way the vendor documents it, and answers in the vendor's shapes:

* the ``Authorization`` header is verified with the test support's own
  TC3-HMAC-SHA256 implementation (:mod:`tests.support.tencent_tc3`, written
  from Tencent's "Signature v3" document, not from the SDK that signs the
  adapter's requests); refusals are ``AuthFailure.SignatureFailure``,
  ``SecretIdNotFound``, ``SignatureExpire``, ``InvalidAuthorization``, as
  HTTP 200 with ``Response.Error``, as the vendor does;
* ``X-TC-Action`` must be one of the two (else ``InvalidAction``),
  ``X-TC-Version`` 2018-03-01 (else ``NoSuchVersion``), the JSON body must
  hold the action's parameters as strings (``MissingParameter`` /
  ``InvalidParameter`` / ``UnknownParameter`` otherwise);
* answers come from a small registry of people given to the constructor
  (:class:`RegisteredPerson`: name, ID number, reference photo or None).
  IdCardVerification: ``Result`` "0" for a registered pair, "-1" when the ID
  number is registered with another name, "-5" for an unknown ID number, "-2"
  when the ID number is not 17 digits and a digit or X, "-3" for an empty or
  non-name name. ImageRecognitionV2 compares the posted image with the
  person's reference photo using the repository's face engine
  (:class:`services.identity.faces.DlibFaceEngine`): ``Sim`` =
  clamp(100 - 50 x distance, 0, 100) to 2 decimals (distance 0.6 is Sim 70),
  ``Result`` "Success" at 70 or more, else
  ``FailedOperation.CompareLowSimilarity``; ``IdPhotoNoExist`` for a person
  without photo, ``LifePhotoDetectNoFaces`` / ``LifePhotoDetectFaces`` for an
  image without a face or with several, and the name and ID errors as
  ``IdFormatError``, ``NameFormatError``, ``IdNoExistSystem``, ``IdNameMisMatch``;
* every answer has a fresh ``RequestId``;
* tests script answers per ID number or for every request (:meth:`script`):
  a ``Result`` (with a ``Sim``), a top-level error code, an HTTP status, a
  body that is not JSON, or a delay; and read what arrived in
  :attr:`received` (action and body, the image replaced by its length).

Face encodings are cached by image digest, so a module-scoped fake encodes
each photo once. Use as a context manager::

    with FakeTencentFaceId([RegisteredPerson("王小明", "11010519491231002X", photo)]) as faceid:
        settings = TencentFaceIdSettings(..., endpoint=faceid.endpoint, scheme="http")
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

from tests.support.tencent_tc3 import verify_request

VERSION = "2018-03-01"
SERVICE = "faceid"
ID_CARD_VERIFICATION = "IdCardVerification"
IMAGE_RECOGNITION = "ImageRecognitionV2"
SAME_PERSON_SIM = 70.0

#: parameters per action: required ones, then optional ones the SDK may send
PARAMETERS = {
    ID_CARD_VERIFICATION: (("IdCard", "Name"), ("Encryption",)),
    IMAGE_RECOGNITION: (("IdCard", "Name", "ImageBase64"), ("Optional", "Encryption", "Extra")),
}

ID_CARD_DESCRIPTIONS = {
    "0": "姓名和身份证号一致",
    "-1": "姓名和身份证号不一致",
    "-2": "非法身份证号（长度、校验位等不正确）",
    "-3": "非法姓名（长度、格式等不正确）",
    "-4": "证件库服务异常",
    "-5": "证件库中无此身份证记录",
    "-6": "权威比对系统升级中，请稍后再试",
    "-7": "认证次数超过当日限制",
}

_ID_SHAPE = re.compile(r"[0-9]{17}[0-9Xx]\Z")
_NOT_IN_A_NAME = re.compile(r"[0-9\x00-\x1f!-/:-@\[-`{-~]")

#: face-engine rules (services.identity.faces) -> the code FaceID gives for such a selfie
_SELFIE_CODES = {
    "no_face": "FailedOperation.LifePhotoDetectNoFaces",
    "multiple_faces": "FailedOperation.LifePhotoDetectFaces",
    "face_too_small": "FailedOperation.LifePhotoPoorQuality",
    "not_an_image": "FailedOperation.ImageDecodeFailed",
    "corrupt_image": "FailedOperation.ImageDecodeFailed",
    "min_size": "FailedOperation.LifePhotoSizeError",
    "max_pixels": "FailedOperation.LifePhotoSizeError",
    "max_bytes": "FailedOperation.ImageSizeTooLarge",
}


@dataclass(frozen=True)
class RegisteredPerson:
    """One record of the fake authority."""

    name: str
    id_number: str
    photo: bytes | None = None

    def __repr__(self) -> str:
        return f"RegisteredPerson(<personal data>, photo={'yes' if self.photo else 'no'})"


@dataclass(frozen=True)
class Scripted:
    """How to answer one request instead of the registry's answer."""

    result: str | None = None        # a forced Result ("-7", "FailedOperation.DbError", "Success" ...)
    sim: float | None = None         # the Sim to report with a forced ImageRecognitionV2 Result
    error_code: str | None = None    # a top-level Response.Error.Code
    http_status: int | None = None   # e.g. 500, with an error page
    raw_body: bytes | None = None    # a 200 answer that is not the vendor's JSON
    delay: float = 0.0               # seconds to wait before answering


@dataclass
class ReceivedCall:
    """One request as it arrived, the image left out."""

    action: str
    body: dict
    image_bytes: int | None  # length of the decoded ImageBase64, when there was one
    outcome: str             # the Result, the error code, or "http_<status>"
    request_id: str
    headers: dict[str, str] = field(repr=False, default_factory=dict)


ANY = None  # script key: every request without its own script


class FakeTencentFaceId:
    def __init__(
        self,
        people: Iterable[RegisteredPerson] = (),
        *,
        secret_id: str = "AKIDfakeFaceIdSecretId00000000000000",
        secret_key: str = "fakeFaceIdSecretKey0000000000000",
        engine=None,
        clock: Callable[[], float] = time.time,
        max_skew_seconds: int = 300,
    ):
        self.people = {person.id_number: person for person in people}
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.clock = clock
        self.max_skew_seconds = max_skew_seconds
        self.received: list[ReceivedCall] = []
        self._engine = engine
        self._encodings: dict[str, tuple[str, object]] = {}  # image digest -> ("ok", encoding) | ("refused", rule)
        self._scripts: dict[str | None, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # scripting -------------------------------------------------------------------------
    def script(self, id_number: str | None = ANY, *, times: int = 1, **behaviour) -> None:
        """Answer the next ``times`` requests for ``id_number`` (every request
        when None) as described: ``result=`` (with ``sim=``), ``error_code=``,
        ``http_status=``, ``raw_body=``, ``delay=``."""
        with self._lock:
            for _ in range(times):
                self._scripts[id_number].append(Scripted(**behaviour))

    def reset(self) -> None:
        """Forget scripts and received requests (the registry and encodings stay)."""
        with self._lock:
            self._scripts.clear()
            self.received.clear()

    def _next_script(self, id_number: object) -> Scripted:
        with self._lock:
            for key in (id_number if isinstance(id_number, str) else None, ANY):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return Scripted()

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeTencentFaceId":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes; with Nagle on, a kept-alive
            # connection's next answer waits for the client's delayed ACK (about 40 ms)
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # noqa: A002 - keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, content_type, data = fake._answer(self.command, self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); that is the point of a delay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeTencentFaceId":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``host:port``, as the SDK's HttpProfile takes an endpoint (use scheme http)."""
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    # the vendor's behaviour ------------------------------------------------------------
    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        request_id = str(uuid.uuid4())
        lower = {k.lower(): v for k, v in headers.items()}
        action = lower.get("x-tc-action", "")
        request = _parse_json(body)

        def record(outcome: str) -> None:
            shown = dict(request) if isinstance(request, dict) else {}
            image = shown.pop("ImageBase64", None)
            with self._lock:
                self.received.append(ReceivedCall(action, shown, _decoded_length(image), outcome, request_id, headers))

        def reply(payload: dict, outcome: str) -> tuple[int, str, bytes]:
            record(outcome)
            payload["RequestId"] = request_id
            return 200, "application/json", json.dumps({"Response": payload}, ensure_ascii=False).encode("utf-8")

        def error(code: str, message: str) -> tuple[int, str, bytes]:
            return reply({"Error": {"Code": code, "Message": message}}, code)

        refusal = verify_request(method=method, path=path, headers=lower, body=body, service=SERVICE,
                                 secret_id=self.secret_id, secret_key=self.secret_key,
                                 now=self.clock(), max_skew_seconds=self.max_skew_seconds)
        if refusal:
            return error(refusal.code, refusal.message)
        if action not in PARAMETERS:
            return error("InvalidAction", f"The requested action `{action}` does not exist.")
        if lower.get("x-tc-version") != VERSION:
            return error("NoSuchVersion", "The requested version does not exist or is not supported.")
        problem = _parameter_problem(action, request)
        if problem:
            return error(*problem)

        scripted = self._next_script(request["IdCard"])
        if scripted.delay:
            time.sleep(scripted.delay)
        if scripted.http_status:
            record(f"http_{scripted.http_status}")
            return scripted.http_status, "text/html", b"<html><body>502 Bad Gateway</body></html>"
        if scripted.raw_body is not None:
            record("raw_body")
            return 200, "text/html", scripted.raw_body
        if scripted.error_code:
            return error(scripted.error_code, "scripted failure")

        if action == ID_CARD_VERIFICATION:
            result = scripted.result or self._verify_identity(request["IdCard"], request["Name"])
            return reply({"Result": result, "Description": ID_CARD_DESCRIPTIONS.get(result, "")}, result)
        if scripted.result:
            sim = scripted.sim if scripted.sim is not None else (100.0 if scripted.result == "Success" else 0.0)
            result = scripted.result
        else:
            result, sim = self._recognise(request["IdCard"], request["Name"], request["ImageBase64"])
        return reply({"Sim": sim, "Result": result, "Description": "成功" if result == "Success" else result,
                      "Extra": ""}, result)

    def _verify_identity(self, id_number: str, name: str) -> str:
        if not _ID_SHAPE.match(id_number):
            return "-2"
        if not _plausible_name(name):
            return "-3"
        person = self.people.get(id_number.upper())
        if person is None:
            return "-5"
        return "0" if person.name == name else "-1"

    def _recognise(self, id_number: str, name: str, image_base64: str) -> tuple[str, float]:
        identity = self._verify_identity(id_number, name)
        if identity != "0":
            return {
                "-1": "FailedOperation.IdNameMisMatch",
                "-2": "FailedOperation.IdFormatError",
                "-3": "FailedOperation.NameFormatError",
                "-5": "FailedOperation.IdNoExistSystem",
            }[identity], 0.0
        person = self.people[id_number.upper()]
        if person.photo is None:
            return "FailedOperation.IdPhotoNoExist", 0.0
        try:
            image = base64.b64decode(image_base64, validate=True)
        except (binascii.Error, ValueError):
            return "FailedOperation.ImageDecodeFailed", 0.0
        if not image:
            return "FailedOperation.EmptyImageError", 0.0
        reference = self._encoding(person.photo)
        if reference[0] != "ok":
            return "FailedOperation.IdPhotoPoorQuality", 0.0
        selfie = self._encoding(image)
        if selfie[0] != "ok":
            return _SELFIE_CODES.get(str(selfie[1]), "FailedOperation.LifePhotoPoorQuality"), 0.0
        from services.identity.faces import face_distance

        distance = face_distance(reference[1], selfie[1])
        sim = round(min(100.0, max(0.0, 100.0 - 50.0 * distance)), 2)
        return ("Success" if sim >= SAME_PERSON_SIM else "FailedOperation.CompareLowSimilarity"), sim

    def _encoding(self, image: bytes) -> tuple[str, object]:
        """The face engine's encoding of the one face in ``image``, or the rule it broke; cached."""
        from services.common.errors import InvalidInput

        digest = hashlib.sha256(image).hexdigest()
        with self._lock:
            cached = self._encodings.get(digest)
        if cached is not None:
            return cached
        try:
            outcome: tuple[str, object] = ("ok", self.engine.encode(image, "selfie"))
        except InvalidInput as exc:
            outcome = ("refused", exc.rule)
        with self._lock:
            self._encodings[digest] = outcome
        return outcome

    @property
    def engine(self):
        """The face engine, loaded on first use (its models take ~0.5 s)."""
        with self._lock:
            if self._engine is None:
                from services.identity.faces import DlibFaceEngine

                self._engine = DlibFaceEngine()
            return self._engine


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _parameter_problem(action: str, request: object) -> tuple[str, str] | None:
    """The vendor's refusal of a body without the action's parameters, as strings."""
    if not isinstance(request, dict):
        return "InvalidParameter", "The request body is not a JSON object."
    required, optional = PARAMETERS[action]
    for name in required:
        if name not in request:
            return "MissingParameter", f"The request is missing a required parameter `{name}`."
    for name in (*required, *optional):
        if name in request and name != "Encryption" and not isinstance(request[name], str):
            return "InvalidParameter", f"The parameter `{name}` must be a string."
    unknown = sorted(set(request) - set(required) - set(optional))
    if unknown:
        return "UnknownParameter", f"The parameter `{unknown[0]}` is not recognized."
    return None


def _plausible_name(name: str) -> bool:
    return 0 < len(name) <= 30 and not _NOT_IN_A_NAME.search(name.replace("·", ""))


def _decoded_length(image: object) -> int | None:
    if not isinstance(image, str):
        return None
    try:
        return len(base64.b64decode(image, validate=True))
    except (binascii.Error, ValueError):
        return None
