"""The offline root's token, opened in a short-lived child process of its own.

Why a child: SoftHSM2 reads ``SOFTHSM2_CONF`` and finds its tokens once per
process, at its first ``C_Initialize`` (services/common/keystore/softhsm.py).
The root's embedded token lives in a SoftHSM2 home of its own (under the root
directory), and ``esign ca issue-ca`` also opens identity's token (another
home) to make the issuing CA's keys there; one process cannot see both. So the
root's token is opened by ``python -m services.identity.root_signer``, whose
``SOFTHSM2_CONF`` is the root's home (a real HSM's module: the caller's
environment), and which opens nothing else. The parent talks to it through
:class:`RootSigner` over a pipe; when the parent closes the pipe, the child
closes its session, logs out and exits: nothing keeps the root open. A
ceremony pays the child's start (about half a second: python-pkcs11 and
cryptography load there).

Protocol: one JSON object per line each way. The first request opens the
token (``{"op": "open", "module", "token_label", "pin", "initial_pin",
"storage_dir"}``; with ``initial_pin`` the user PIN is first changed from it
to ``pin``, :func:`~services.common.keystore.pkcs11_token.change_pin`); then
``generate``, ``public_key``, ``sign_digest``, ``destroy``, as
:class:`~services.common.keystore.KeyStore` has them. An answer is
``{"ok": value}`` or ``{"error": {"type", "args"}}``: the child's typed error
(``Unavailable("key_store", reason)``, ``InvalidInput``, ``IntegrityError``),
raised again as itself in the parent. The PIN travels on the pipe only (never
an argument or the environment, which ``ps`` shows) and is never echoed. The
child's own log lines go to the parent's standard error.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from services.common.errors import IntegrityError, InvalidInput, Unavailable
from services.common.keystore import (
    EC_P256,
    PKCS11,
    SESSION_LOST,
    TOKEN_ERROR,
    TOKEN_MISSING,
    KeyRef,
    PublicKey,
    fault,
    require_backend,
)
from services.common.keystore.softhsm import CONF_ENV

log = logging.getLogger(__name__)

#: the typed errors the child may answer with, raised again as themselves in the parent
_ERRORS: dict[str, type[Exception]] = {"Unavailable": Unavailable, "InvalidInput": InvalidInput,
                                       "IntegrityError": IntegrityError}
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding ``services``


class RootSigner:
    """The parent's end: a key store of one token, in the child (use as a context manager).

    It offers what :class:`~services.common.keystore.private_keys.StoreEcPrivateKey` and a
    root ceremony need (``generate``, ``public_key``, ``sign_digest``, ``destroy``)."""

    backend = PKCS11

    def __init__(self, module: str, token_label: str, pin: str, *, softhsm_conf: Path | None = None,
                 storage_dir: Path | None = None, initial_pin: str | None = None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONWARNINGS"] = "ignore"  # the child's imports warn (eventlet); its answers are its output
        if softhsm_conf is not None:
            env[CONF_ENV] = str(softhsm_conf)
        try:
            self._child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")
        except OSError:
            log.error("root signer: the child process does not start (%s)", sys.executable)
            raise fault(TOKEN_MISSING) from None
        try:
            self._ask("open", module=module, token_label=token_label, pin=pin, initial_pin=initial_pin,
                      storage_dir=str(storage_dir) if storage_dir is not None else None)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "RootSigner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RootSigner(pid={self._child.pid})"

    # -- what a key store offers

    def generate(self, label: str, algorithm: str = EC_P256) -> KeyRef:
        return KeyRef.from_dict(self._ask("generate", label=label, algorithm=algorithm))

    def public_key(self, ref: KeyRef) -> PublicKey:
        require_backend(PKCS11, ref)
        return load_pem_public_key(self._ask("public_key", ref=ref.to_dict()).encode("ascii"))

    def sign_digest(self, ref: KeyRef, digest: bytes, algorithm: str = "sha256") -> bytes:
        require_backend(PKCS11, ref, EC_P256)
        return bytes.fromhex(self._ask("sign_digest", ref=ref.to_dict(), digest=bytes(digest).hex(),
                                       algorithm=algorithm))

    def destroy(self, ref: KeyRef) -> bool:
        require_backend(PKCS11, ref)
        return bool(self._ask("destroy", ref=ref.to_dict()))

    def close(self) -> None:
        """Close the pipe: the child closes its session, logs out and exits."""
        child = self._child
        if child.poll() is None:
            try:
                child.stdin.close()
                child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()
        child.stdout.close()

    # -- the pipe

    def _ask(self, op: str, **fields: Any) -> Any:
        try:
            self._child.stdin.write(json.dumps(dict(fields, op=op)) + "\n")
            self._child.stdin.flush()
            line = self._child.stdout.readline()
        except (OSError, ValueError):  # the child is gone (a closed pipe)
            line = ""
        if not line:
            log.error("root signer: the child process ended during %s (exit %s)", op, self._child.poll())
            raise fault(SESSION_LOST)
        answer = json.loads(line)
        if "error" in answer:
            error = _ERRORS.get(answer["error"].get("type"))
            if error is None:
                raise fault(TOKEN_ERROR)
            raise error(*answer["error"]["args"])
        return answer["ok"]


# --- the child's end ------------------------------------------------------------------------------


def _serve(requests, answers) -> None:
    """Answer the parent's requests until it closes the pipe; the token is closed after."""
    from services.common.keystore.pkcs11_token import Pkcs11KeyStore, TokenSettings, change_pin

    store = None
    try:
        for line in requests:
            request = json.loads(line)
            op = request.get("op")
            try:
                if op == "open":
                    if store is not None:
                        raise InvalidInput("op", "allowed_values", "the token is open already")
                    storage_dir = request.get("storage_dir")
                    settings = TokenSettings(module=request["module"], token_label=request["token_label"],
                                             pool_size=1, storage_dir=Path(storage_dir) if storage_dir else None)
                    if request.get("initial_pin"):
                        change_pin(settings, request["initial_pin"], request["pin"])
                    store = Pkcs11KeyStore.open(settings, request["pin"])
                    value: Any = None
                elif store is None:
                    raise InvalidInput("op", "order", "expected the token to be opened first")
                elif op == "generate":
                    value = store.generate(request["label"], request["algorithm"]).to_dict()
                elif op == "public_key":
                    value = store.public_key(KeyRef.from_dict(request["ref"])).public_bytes(
                        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
                elif op == "sign_digest":
                    value = store.sign_digest(KeyRef.from_dict(request["ref"]), bytes.fromhex(request["digest"]),
                                              request["algorithm"]).hex()
                elif op == "destroy":
                    value = store.destroy(KeyRef.from_dict(request["ref"]))
                else:
                    raise InvalidInput("op", "allowed_values", "expected open, generate, public_key,"
                                                               " sign_digest or destroy")
                answer: dict[str, Any] = {"ok": value}
            except (Unavailable, InvalidInput, IntegrityError) as exc:
                answer = {"error": {"type": type(exc).__name__, "args": list(exc.args)}}
            except Exception as exc:  # noqa: BLE001 - answered as a token error, named in the log only
                log.error("%s failed: %s", op, type(exc).__name__)
                answer = {"error": {"type": "internal", "args": []}}
            answers.write(json.dumps(answer) + "\n")
            answers.flush()
    finally:
        if store is not None:
            store.close()


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="root signer: %(message)s")
    # answers go on a copy of the original standard output; anything else printed goes to stderr
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
