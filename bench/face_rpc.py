"""verify_face over RPC against raw face_recognition, on the same photos in the same run.

    .venv/bin/python bench/face_rpc.py [N]     (default N = 15 calls each)

Starts the identity and notify services in this process (nameko containers)
on a throwaway RabbitMQ vhost (made with rabbitmqctl, deleted at the end) and
SQLite files in a temporary directory, registers one person (phone code read
from the console SMS outbox), then measures:

  - rpc: ``identity.verify_face(person, obama.jpg, obama2.jpg)`` through a
    standalone RPC proxy — base64, AMQP both ways, the face process pool
    (decode, detect on a <=800 px copy, encode both), sealing the encoding,
    an audit row and the commit;
  - raw: ``face_recognition.load_image_file`` + ``face_locations`` +
    ``face_encodings`` on both images, in this process, as the library is
    plainly used (full-resolution detection);

and prints the p50 of each and the ratio rpc / raw.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import base64  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_ms  # noqa: E402

from tests.support.faces import face_path  # noqa: E402

RABBIT = "guest:guest@127.0.0.1:5672"
PHONE = "13800138000"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)




def config(service: str, work: Path, amqp_uri: str, **extra) -> dict:
    return {"AMQP_URI": amqp_uri, "DATA_DIR": str(work / "data"), "max_workers": 10,
            "DATABASE": {"URL": f"sqlite:///{work / (service + '.db')}", "SCHEMA": None},
            "OUTBOX": {"RELAY_INTERVAL": 0.2}, "METRICS": {"PORT": 0}, **extra}


def sms_code(outbox: Path) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if outbox.exists():
            lines = [json.loads(line) for line in outbox.read_text("utf-8").splitlines() if line.strip()]
            if lines:
                return lines[-1]["params"]["code"]
        eventlet.sleep(0.1)
    raise SystemExit("no SMS code arrived")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    logging.basicConfig(level=logging.WARNING)
    from nameko.containers import ServiceContainer
    from nameko.standalone.rpc import ClusterRpcProxy

    from services.identity.service import IdentityService
    from services.notify.service import NotifyService

    portrait_path, selfie_path = face_path("obama"), face_path("obama2")
    portrait = base64.b64encode(portrait_path.read_bytes()).decode()
    selfie = base64.b64encode(selfie_path.read_bytes()).decode()
    vhost = f"esign-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, RABBIT.split(":")[0], ".*", ".*", ".*")
    amqp_uri = f"pyamqp://{RABBIT}/{vhost}"
    containers = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            outbox = work / "sms.jsonl"
            secrets = {name: {"file": str(work / "secrets" / name)} for name in ("KEK", "BLIND_INDEX_KEY", "OTP_KEY")}
            for cls, cfg in ((IdentityService, config("identity", work, amqp_uri, SECRETS={**secrets, "GENERATE_MISSING": True})),
                             (NotifyService, config("notify", work, amqp_uri, SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)},
                                                                    SECRETS={"GENERATE_MISSING": True}))):
                container = ServiceContainer(cls, cfg)
                container.start()
                containers.append(container)
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=120) as rpc:
                challenge = rpc.identity.request_phone_code(phone=PHONE)["challenge_id"]
                rpc.identity.confirm_phone_code(challenge_id=challenge, code=sms_code(outbox))
                person = rpc.identity.register(name="张三", id_number="11010519491231002X", phone=PHONE,
                                               phone_challenge_id=challenge)["person_id"]
                first = time.perf_counter()
                answer = rpc.identity.verify_face(person_id=person, id_portrait=portrait, selfie=selfie)
                cold = (time.perf_counter() - first) * 1000
                assert answer["matched"], answer
                rpc_ms = median_ms(lambda: rpc.identity.verify_face(person_id=person, id_portrait=portrait,
                                                                 selfie=selfie), runs)

            import face_recognition

            def raw() -> None:
                for path in (portrait_path, selfie_path):
                    image = face_recognition.load_image_file(str(path))
                    face_recognition.face_encodings(image, face_recognition.face_locations(image))

            raw()  # loads the models once, as the pool's worker did
            raw_ms = median_ms(raw, runs)
    finally:
        for container in reversed(containers):
            container.stop()
        rabbitmqctl("delete_vhost", vhost)
    print(f"verify_face(obama, obama2), p50 of {runs} calls; distance {answer['distance']}")
    print(f"  rpc verify_face      {rpc_ms:8.1f} ms   (first call, pool start + model load: {cold:.0f} ms)")
    print(f"  raw face_recognition {raw_ms:8.1f} ms   (load + face_locations + face_encodings, both images)")
    print(f"  ratio rpc / raw      {rpc_ms / raw_ms:8.2f}")


if __name__ == "__main__":
    main()
