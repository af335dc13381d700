"""The cost of key custody: signing through the PKCS#11 token (SoftHSM2) against
signing with a sealed key unsealed in memory, in the same run.

Usage: .venv/bin/python bench/keystore.py [--runs N] [--keys K] [--threads T]

Makes a SoftHSM2 token in a temporary directory (services/common/keystore/softhsm.py),
opens both stores (services/common/keystore), and for each reports p50 and p99 of:

* ``sign_digest`` (ECDSA P-256 over a SHA-256 digest, DER out): what every PAdES
  signature, certificate, CRL, OCSP response and time stamp will cost; the
  headline is the pkcs11 / sealed ratio of the p50s;
* ``sign`` (Ed25519, an evidence-log checkpoint);
* ``generate`` (a person's key at certificate issue);
* the first ``sign_digest`` with a key a pooled session has not used yet, with
  K keys on the token (SoftHSM2 looks a CKA_ID up by reading every object);

then signatures per second from T OS threads at once (calls into SoftHSM2 are
serialised: see pkcs11_token's docstring). No time is asserted anywhere.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import percentile  # noqa: E402
from services.common.keystore import EC_P256, ED25519  # noqa: E402
from services.common.keystore.pkcs11_token import Pkcs11KeyStore, TokenSettings  # noqa: E402
from services.common.keystore.sealed import SealedKeyStore  # noqa: E402
from services.common.keystore.softhsm import ensure_token  # noqa: E402
from services.common.sealing import Keyring  # noqa: E402


def report(name: str, samples: list[float]) -> float:
    """Print p50 and p99 in microseconds; answer the p50 in seconds."""
    p50 = percentile(samples, 0.5)
    print(f"{name:<44} n={len(samples):<5} p50 {p50 * 1e6:9.1f} us   p99 {percentile(samples, 0.99) * 1e6:9.1f} us")
    return p50


def timed(action, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def throughput(store, ref, threads: int, per_thread: int) -> float:
    barrier = threading.Barrier(threads + 1)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            store.sign_digest(ref, hashlib.sha256(f"{n}/{i}".encode()).digest())

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * per_thread / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="calls measured per figure")
    parser.add_argument("--keys", type=int, default=200, help="keys on the token for the first-use lookup")
    parser.add_argument("--threads", type=int, default=4, help="OS threads signing at once")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-keystore-") as data:
        token = ensure_token(data, "bench")
        token.activate()
        hsm = Pkcs11KeyStore.open(TokenSettings(token_label="bench", pool_size=max(4, args.threads)), token.pin())
        sealed = SealedKeyStore(Keyring({"bench": os.urandom(32)}, "bench"))
        try:
            print(f"SoftHSM2 token in {data}; {args.runs} calls per figure")
            digest = hashlib.sha256(b"signed attributes of a PAdES signature").digest()
            medians = {}
            for name, store in (("pkcs11", hsm), ("sealed", sealed)):
                ec_ref, ed_ref = store.generate("bench/ec", EC_P256), store.generate("bench/ed", ED25519)
                store.sign_digest(ec_ref, digest)  # the first call finds the key; measured separately below
                store.sign(ed_ref, b"warm")
                medians[name] = report(f"sign_digest ECDSA P-256, {name}",
                                       timed(lambda s=store, r=ec_ref: s.sign_digest(r, digest), args.runs))
                report(f"sign Ed25519 checkpoint, {name}",
                       timed(lambda s=store, r=ed_ref: s.sign(r, b"esign/log\n1042\nroot\n"), args.runs))
                report(f"generate P-256, {name}", timed(
                    lambda s=store: s.generate("bench/person", EC_P256), max(2, min(args.runs // 10, 200))))
                print(f"{'sign_digest/s from ' + str(args.threads) + ' OS threads, ' + name:<44} "
                      f"{throughput(store, ec_ref, args.threads, max(1, args.runs // args.threads)):8.0f}")
            ratio = medians["pkcs11"] / medians["sealed"]
            print(f"sign_digest p50 pkcs11 / sealed = {ratio:.2f} "
                  f"({medians['pkcs11'] * 1e6:.0f} us / {medians['sealed'] * 1e6:.0f} us)")

            extra = max(0, args.keys - len(hsm.list_refs("bench/")))
            for _ in range(extra):
                hsm.generate("bench/filler", EC_P256)
            fresh = [hsm.generate("bench/fresh", EC_P256) for _ in range(max(2, min(args.runs // 100, 20)))]
            on_token = len(hsm.list_refs("bench/"))
            hsm._token.reset(reinitialize=False)  # a new pool: no session has looked any key up yet
            unused = iter(fresh)
            report(f"first sign_digest of a key, {on_token} keys",
                   timed(lambda: hsm.sign_digest(next(unused), digest), len(fresh)))
        finally:
            hsm.close()


if __name__ == "__main__":
    main()
