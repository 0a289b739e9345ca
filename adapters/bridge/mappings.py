"""What the bridge mirrors: server rows mapped to ``enqueue_bridge_event`` arguments.

Two mappings (DESIGN §6), each switched on in the config (``[mappings]``):

* **provider capability -> NIP-89 handler information, kind 31990.**  A ``provider_capability`` row
  becomes ``outbox_id = "cap:<provider_id>:<version>"``, ``source =
  "provider_capability:<provider_id>"``, tags ``["d", provider_id]`` and one ``["k", "<kind>"]``
  per NIP-90 job kind it serves (ascending), content the canonical JSON of the capability object
  with the row's ``price_hint_sats``, ``status`` and ``version`` added (they win over same-named
  keys; a capability that is not a JSON object is put under ``"capability"``).  Kind 31990 is
  parameterized-replaceable by ``(pubkey, kind, d)``, so each new version replaces the last on
  relays, and a withdrawn provider is mirrored with ``"status":"withdrawn"``.
* **receipt pointer -> application-specific data, kind 30078.**  A ``compute_assignment`` in one of
  ``receipt_statuses`` (default ``completed``, ``failed``) becomes ``outbox_id =
  "receipt:<request_id>"``, ``source = "compute_assignment:<request_id>"``, tags ``["d",
  d_prefix + request_id]`` and ``["t", "receipt"]``, content the canonical JSON of
  ``{job_kind, provider_id, request_hash, request_id, result_hash, status, version}`` -- hashes,
  never the request or result payloads themselves.

Both are pure functions of the row, so enqueueing again after a restart is an accepted no-op (the
outbox dedupes by ``content_hash``).  Canonical JSON escapes every control character, so mapped
content never holds one of the characters relays serialize differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from spec.canonical import dumps_canonical, payload_hash
from spec.values import ComputeAssignment, ProviderCapability

__all__ = ["MappingConfig", "OutboxRequest", "capability_request", "receipt_request"]

HANDLER_KIND = 31990  # NIP-89 handler information
APP_DATA_KIND = 30078  # NIP-78 application-specific data


@dataclass(frozen=True, slots=True)
class OutboxRequest:
    """The arguments of ``enqueue_bridge_event``."""

    outbox_id: str
    source: str
    nostr_kind: int
    tags_json: str
    content: str

    def args(self) -> tuple[str, str, int, str, str]:
        return (self.outbox_id, self.source, self.nostr_kind, self.tags_json, self.content)


@dataclass(frozen=True, slots=True)
class MappingConfig:
    provider_capability: bool = False
    receipts: bool = False
    receipt_statuses: frozenset[str] = frozenset({"completed", "failed"})
    d_prefix: str = "syncref:receipt:"


def capability_request(row: ProviderCapability) -> OutboxRequest:
    try:
        capability = json.loads(row.capability)
    except ValueError:
        capability = row.capability
    body = dict(capability) if isinstance(capability, dict) else {"capability": capability}
    body.update(price_hint_sats=row.price_hint_sats, status=row.status, version=row.version)
    tags = [["d", row.provider_id], *(["k", str(k)] for k in sorted(set(row.nip90_kinds)))]
    return OutboxRequest(f"cap:{row.provider_id}:{row.version}", f"provider_capability:{row.provider_id}",
                         HANDLER_KIND, dumps_canonical(tags), dumps_canonical(body))


def receipt_request(row: ComputeAssignment, config: MappingConfig | None = None) -> OutboxRequest | None:
    """The receipt pointer of a finished assignment, or None when its status is not mirrored."""
    config = config or MappingConfig()
    if row.status not in config.receipt_statuses:
        return None
    body = {"job_kind": row.job_kind, "provider_id": row.provider_id, "request_hash": row.request_hash,
            "request_id": row.request_id,
            "result_hash": None if row.result is None else payload_hash(row.result),
            "status": row.status, "version": row.version}
    tags = [["d", config.d_prefix + row.request_id], ["t", "receipt"]]
    return OutboxRequest(f"receipt:{row.request_id}", f"compute_assignment:{row.request_id}", APP_DATA_KIND,
                         dumps_canonical(tags), dumps_canonical(body))
