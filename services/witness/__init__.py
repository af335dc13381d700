"""An independent witness for the platform's evidence log.

The signing service keeps every flow event in an append-only Merkle log
(RFC 9162) and signs its checkpoints (c2sp.org/tlog-checkpoint, as
c2sp.org/signed-note notes). A checkpoint signed only by the platform proves
nothing to someone who suspects the platform: it could show one history to a
court and another to a party. A *witness* is a small program run by someone
else — a notary, a court's evidence platform, a party's lawyer — that keeps the
latest checkpoint it saw for the log and cosigns a new one only after checking
an RFC 6962 consistency proof from the old one (c2sp.org/tlog-witness,
cosignatures: c2sp.org/tlog-cosignature ``cosignature/v1``, Ed25519). A
checkpoint cosigned by witnesses the verifier trusts is one every one of them
has seen as an extension of everything before it.

Running a witness
-----------------

1. Install this repository (``pip install .`` in a checkout, Python 3.11; the
   witness needs no RabbitMQ, database server or anything else from the
   platform) on a machine you control.
2. Make the witness's key and state directory; the name is yours (a URL-like
   name without scheme is customary)::

       esign witness init --state-dir /var/lib/esign-witness --name witness.example.org/w1

   It prints the witness's verifier key, ``witness.example.org/w1+<id>+<base64>``.
   The private key stays in ``witness.key`` (mode 0600); back it up offline.
3. Give that verifier key to the platform's operator (they add it to the
   witnesses the log asks), and publish it where verifiers of signed
   documents can find it.
4. Fetch the log's public key from the platform, ``GET /api/v1/log/public-key``
   (``{"public_key": "<name>+<id>+<base64>"}``) — check it against what the
   operator told you by another channel — and follow the log::

       esign witness add-log --state-dir /var/lib/esign-witness \\
           --origin <the log's origin, the first line of its checkpoints> --key '<public_key>'

5. Run it, behind an HTTPS reverse proxy (it speaks plain HTTP; keep it on
   127.0.0.1)::

       esign witness run --state-dir /var/lib/esign-witness --listen 127.0.0.1:7380

   It prints ``witness <name> listening on http://127.0.0.1:7380`` and stops
   cleanly on SIGTERM. It serves ``POST /add-checkpoint``,
   ``GET /<hex sha256(origin)>/checkpoint`` (the latest cosigned checkpoint,
   for monitors), ``GET /healthz`` and ``GET /metrics``.
6. ``esign witness status --state-dir ...`` shows, per log, the size, root and
   time of the latest cosigned checkpoint, whether its signatures still verify,
   and any misbehaviour seen (a fork — two signed trees of one size — is proof
   the log lied; keep ``state.db`` as evidence).

Modules: :mod:`.cosignature` (cosignature/v1 keys, signing, verifying),
:mod:`.protocol` (the add-checkpoint body, status codes, answers),
:mod:`.state` (SQLite state, atomic check-and-set, misbehaviour),
:mod:`.witness` (the decision), :mod:`.config` (the state directory),
:mod:`.server` (HTTP), :mod:`.metrics`, :mod:`.cli`.
"""
