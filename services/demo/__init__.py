"""``esign demo``: two demo people sign an IOU on the running platform, the way
two people with a phone each would, over the public HTTP API only.

The demo people are the synthetic ones of the embedded identity registry
(:mod:`services.identity.proofing.demo`); their faces are the registry's own
reference photos, which is why the platform must be started with
``esign up --demo`` (a photo file stands in for a live face there, and every
certificate and report says so: ``authority_face``). Their SMS codes are read
from the console provider's outbox, as a phone would show them.

* :mod:`.api_client`: the gateway's ``/api/v1`` with one person's session,
  its refusals as :class:`~.api_client.ApiError`;
* :mod:`.sms_inbox`: the codes the console outbox holds for a phone;
* :mod:`.walkthrough`: the steps (register or log in, prove the face, take
  a certificate, draft, render, start, sign twice by SMS code, report);
* :mod:`.cli`: the command, which finds ``esign up`` through its state file
  (:mod:`services.common.up_state`).
"""
