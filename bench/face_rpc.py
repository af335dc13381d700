"""Face proofs over RPC against raw face_recognition, on the same faces in the same run.

    .venv/bin/python bench/face_rpc.py [N]     (default N = 15 calls each)

Starts the identity and notify services in this process (nameko containers)
on a throwaway RabbitMQ vhost (made with rabbitmqctl, deleted at the end) and
SQLite files in a temporary directory, with a local identity registry as the
authority, registers one person (phone code read from the console SMS
outbox), then measures:

  - selfie: ``identity.proof_face(person, selfie=obama2.jpg)`` (uploads
    allowed) through a standalone RPC proxy: base64, AMQP both ways, the face
    process pool (decode, detect on a <=800 px copy, encode), the registry's
    comparison with its (cached) reference encoding, sealing the face, an
    identity_proofs row, an audit row and the commit; against
    raw: ``face_recognition.load_image_file`` + ``face_locations`` +
    ``face_encodings`` on the selfie, in this process (full-resolution detection);
  - live (where the shared folder has the stage clip): ``start_liveness`` +
    ``proof_face(frames=12 frames performing the challenge)``: the liveness
    check (detection, landmarks and encoding of every frame) and the proof;
    against raw face_recognition on the same 12 frames;

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
from tests.support import liveness_clip  # noqa: E402
from tests.support.faces import face_path  # noqa: E402
from tests.support.registry import PERFORMER, write_registry  # noqa: E402

RABBIT = "guest:guest@127.0.0.1:5672"
PHONE = "13800138000"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)




def config(service: str, work: Path, amqp_uri: str, **extra) -> dict:
    return {"AMQP_URI": amqp_uri, "DATA_DIR": str(work / "data"), "max_workers": 10,
            "DATABASE": {"URL": f"sqlite:///{work / (service + '.db')}", "SCHEMA": None},
            "OUTBOX": {"RELAY_INTERVAL": 0.2}, "METRICS": {"PORT": 0}, **extra}


def sms_lines(outbox: Path) -> list[dict]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text("utf-8").splitlines() if line.strip()]


def sms_code(outbox: Path, before: int) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = sms_lines(outbox)
        if len(lines) > before:
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

    selfie_path = face_path("obama2")
    selfie = base64.b64encode(selfie_path.read_bytes()).decode()
    live = liveness_clip.available()
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
            registry = write_registry(work / "registry",
                                      [("张三", "11010519491231002X", "obama"),
                                       ("李四", "440524188001010014", PERFORMER if live else "obama")])
            identity_config = config("identity", work, amqp_uri, SECRETS={**secrets, "GENERATE_MISSING": True},
                                     PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)},
                                     FACES={"ALLOW_UPLOAD": True})
            for cls, cfg in ((IdentityService, identity_config),
                             (NotifyService, config("notify", work, amqp_uri,
                                                    SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)},
                                                    SECRETS={"GENERATE_MISSING": True}))):
                container = ServiceContainer(cls, cfg)
                container.start()
                containers.append(container)
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=120) as rpc:
                def register(name: str, id_number: str, phone: str) -> str:
                    before = len(sms_lines(outbox))
                    challenge = rpc.identity.request_phone_code(phone=phone)["challenge_id"]
                    rpc.identity.confirm_phone_code(challenge_id=challenge, code=sms_code(outbox, before))
                    return rpc.identity.register(name=name, id_number=id_number, phone=phone,
                                                 phone_challenge_id=challenge)["person_id"]

                person = register("张三", "11010519491231002X", PHONE)
                first = time.perf_counter()
                answer = rpc.identity.proof_face(person_id=person, selfie=selfie)
                cold = (time.perf_counter() - first) * 1000
                assert answer["matched"], answer
                rpc_ms = median_ms(lambda: rpc.identity.proof_face(person_id=person, selfie=selfie), runs)
                live_ms = None
                if live:
                    performer = register("李四", "440524188001010014", "13900139000")

                    def live_proof() -> None:
                        challenge = rpc.identity.start_liveness(person_id=performer)
                        frames = [base64.b64encode(f).decode() for f in liveness_clip.frames_for(challenge["actions"])]
                        assert rpc.identity.proof_face(person_id=performer, challenge_id=challenge["challenge_id"],
                                                       frames=frames)["matched"]

                    live_ms = median_ms(live_proof, max(3, runs // 3))

            import face_recognition

            def raw() -> None:
                image = face_recognition.load_image_file(str(selfie_path))
                face_recognition.face_encodings(image, face_recognition.face_locations(image))

            raw()  # loads the models once, as the pool's worker did
            raw_ms = median_ms(raw, runs)
            raw_live_ms = None
            if live:
                frames = liveness_clip.pixel_frames_for(("turn_right", "turn_left"))

                def raw_frames() -> None:
                    for image in frames:
                        face_recognition.face_encodings(image, face_recognition.face_locations(image))

                raw_live_ms = median_ms(raw_frames, max(3, runs // 3))
    finally:
        for container in reversed(containers):
            container.stop()
        rabbitmqctl("delete_vhost", vhost)
    print(f"proof_face(selfie obama2 vs registry photo obama), p50 of {runs} calls; distance {answer['score']}")
    print(f"  rpc proof_face       {rpc_ms:8.1f} ms   (first call, pool start + model load: {cold:.0f} ms)")
    print(f"  raw face_recognition {raw_ms:8.1f} ms   (load + face_locations + face_encodings, the selfie)")
    print(f"  ratio rpc / raw      {rpc_ms / raw_ms:8.2f}")
    if live_ms is not None:
        print(f"live proof (challenge + 12 frames of the stage clip), p50 of {max(3, runs // 3)}")
        print(f"  rpc start_liveness + proof_face {live_ms:8.1f} ms")
        print(f"  raw face_recognition, 12 frames {raw_live_ms:8.1f} ms")
        print(f"  ratio rpc / raw                 {live_ms / raw_live_ms:8.2f}")


if __name__ == "__main__":
    main()
