"""The SCIM protocol for one request: scim2-server's handler over the Table storage (store.py).
Imported by service.py on the first SCIM request, never at worker start."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from http import HTTPStatus
from typing import Any

from scim2_models import (
    InvalidSyntaxException,
    InvalidValueException,
    NoTargetException,
    NotFoundException,
    PatchOp,
    PreconditionFailedException,
    SCIMException,
)
from scim2_models.path import AttrPath, CompareOperator, Comparison
from scim2_models.path.expressions import LogicalExpr, LogicalOperator
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService

from . import resources
from .resources import POLICY, comparison_key, ignored_schema, member
from .store import Raced, TableScimStorage

# A write that lost a race with another write to the same person starts over, after a short random
# pause (so racers spread out): with six writers at once, the last one loses up to five times.
RACE_ATTEMPTS = 10
RACE_PAUSE = 0.01  # seconds, times the attempt number, times a random factor in [0.5, 1.5)


class PortalScimService(ScimService):
    def read_body(self, model, body: bytes, content_type: str | None, scim_ctx):
        """The library's reading, after steps of ours: a schema URN neither kept nor
        known-and-ignored is refused (invalidSyntax) rather than dropped with its attributes,
        Entra's enterprise extension and any other User extension (kept nowhere,
        resources.ignored_schema) are dropped whole, and roles sent as JSON strings
        are read in their plain form (mapping.plain_role), a filtered key in a path-less PATCH value
        is its own operation rather than dropped with its change, and a Remove's plain value is kept
        aside from the library's checks, which take only entries (apply_patch reads it). A body nested
        too deep for the JSON parser is invalidSyntax: the library catches only ValueError, so its
        RecursionError was a 500."""
        try:
            payload = self.decode_body(body, content_type)
        except RecursionError as exc:
            raise InvalidSyntaxException(detail="the body is nested too deeply") from exc
        if isinstance(payload, dict):
            _refuse_names_given_twice(payload)
            if "schemas" in payload:
                schemas = payload["schemas"]
                if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
                    raise InvalidSyntaxException(detail="schemas must be a list of URNs")
                unknown = [s for s in schemas if s.lower() not in _KNOWN_SCHEMAS and not ignored_schema(s)]
                if unknown:
                    raise InvalidSyntaxException(detail=f"unknown schema {unknown[0][:100]!r}")
                for key in [k for k in payload if ignored_schema(k)]:
                    payload.pop(key)
                payload["schemas"] = [s for s in schemas if not ignored_schema(s)]
            _split_filtered_value_keys(payload)
            named = _take_plain_removal_values(payload)
            body = json.dumps(resources.plain_roles_in(payload)).encode()
            read = super().read_body(model, body, content_type, scim_ctx)
            return _with_plain_removal_values(read, named) if named else read
        return super().read_body(model, body, content_type, scim_ctx)

    def apply_patch(self, current, patch_op, conditions):
        """The library's (preconditions, then the operations), each Remove naming a plain value
        applied as what it selects, and each change of an entry named by its value refused unless the
        person holds that entry (_patch_step_by_step)."""
        if not any(_plain_removal(op) or _names_entry_by_value(op) for op in patch_op.operations or []):
            return super().apply_patch(current, patch_op, conditions)
        self.check_preconditions(current, "PATCH", conditions)
        return current if _patch_step_by_step(current, patch_op) else None


def _refuse_names_given_twice(value: Any) -> None:
    """A member named twice in one object, in two cases (`operations` and `Operations`): names are
    case-insensitive, and our steps read the first (resources.member) where the library reads the last,
    so a Remove's value went back onto another operation, or past the end (a 500)."""
    if isinstance(value, dict):
        names = [k.lower() for k in value if isinstance(k, str)]
        counts = Counter(names)  # not names.count: a body of 23,000 keys took seconds
        twice = next((n for n in names if counts[n] > 1), None)
        if twice is not None:
            raise InvalidSyntaxException(detail=f"the member {twice[:100]!r} is given twice (names ignore case)")
        members = value.values()
    elif isinstance(value, list):
        members = value
    else:
        return
    for member_value in members:
        _refuse_names_given_twice(member_value)


def _split_filtered_value_keys(payload: dict) -> None:
    """A key with a filter (`emails[type eq "work"].value`) in the value object of a PATCH operation
    without a path names no attribute, so the library would drop it as unknown (the policy's
    unknown=ignore) and the PATCH succeed without its change. Each such key becomes an operation of
    its own, of the same op, with the key as its path (Entra's documented shape for it); in place."""
    operations = member(payload, "operations")
    if not isinstance(operations, list):
        return
    split = []
    for op in operations:
        split.append(op)
        if isinstance(op, dict) and not member(op, "path") and isinstance(value := member(op, "value"), dict):
            for key in [k for k in value if isinstance(k, str) and "[" in k]:
                split.append({"op": member(op, "op"), "path": key, "value": value.pop(key)})
    operations[:] = split


def _take_plain_removal_values(payload: dict) -> dict[int, Any]:
    """The plain values (neither an object nor a list) of the Remove operations with a path, taken
    out of the payload, by the operation's position: the library refuses them (it reads a Remove's
    value only as the entries to remove), and with them the whole PATCH."""
    operations = member(payload, "operations")
    taken = {}
    for index, op in enumerate(operations if isinstance(operations, list) else []):
        if not isinstance(op, dict) or str(member(op, "op")).lower() != "remove" or \
                not isinstance(member(op, "path"), str):
            continue
        key = next((k for k in op if isinstance(k, str) and k.lower() == "value"), None)
        if key is not None and op[key] is not None and not isinstance(op[key], dict | list):
            taken[index] = op.pop(key)
    return taken


def _with_plain_removal_values(read, named: dict[int, Any]):
    """The PatchOp read without them, with the plain values back on their operations (the library
    reads one operation per item, in order). Any other body read is as it was: its `Operations` is
    an attribute the policy drops."""
    if not isinstance(read, PatchOp):
        return read
    operations = list(read.operations or [])
    for index, value in named.items():
        operations[index] = operations[index].model_copy(update={"value": value})
    return read.model_copy(update={"operations": operations})


def _plain_removal(op) -> bool:
    return op.op == op.Op.remove and op.path is not None and op.value is not None and \
        not isinstance(op.value, dict | list)


def _patch_step_by_step(current, patch_op) -> bool:
    """Whether the PATCH changed `current`, applied in place with each Remove naming a plain value
    made a Remove of what that value selects, or left out when it selects nothing: the value is
    compared with the one the person holds after the operations before it, as the attribute compares
    values. The value says what goes (RFC 7644 3.5.2.2 removes what a filter matches): a Remove
    naming a value the person does not hold (a stale one) removes nothing, rather than whatever is
    there. An Add or Replace of an entry named by its value (_names_entry_by_value) is noTarget
    unless the person holds that entry after the operations before it. The operations between two
    such steps apply together; one failing leaves `current` part-patched, which the failed request
    drops with its error (the handler writes nothing)."""
    changed, run = False, []
    for op in patch_op.operations or []:
        if _plain_removal(op):
            changed = _patched(current, patch_op, run) or changed
            op, run = _selected_removal(op, current), []
        elif _names_entry_by_value(op):
            changed = _patched(current, patch_op, run) or changed
            run = []
            if not _selection(op.path).get(current):
                raise NoTargetException(detail=f"no value matches the filter of {str(op.path)[:100]!r}")
        if op is not None:
            run.append(op)
    return _patched(current, patch_op, run) or changed


def _names_entry_by_value(op) -> bool:
    """An Add or Replace whose path filter names the entry by its `value` (`roles[value eq
    "Portal.Agent"].display`) but whose own value does not give it (it changes another sub-attribute).
    The policy makes a filter that matches nothing add the entry it describes, as Entra expects of
    `emails[type eq "work"].value`: here the filter alone would give the value, and a cosmetic change
    of a role the person does not hold would grant that role (an agent account no app role gave), of
    an email they do not have, add that address. Such an operation must find the entry held."""
    path = op.path
    if op.op == op.Op.remove or path is None or path.value_filter is None:
        return False
    sub = path.parts[1].lower() if len(path.parts) > 1 else None
    if sub == "value" or (sub is None and isinstance(op.value, dict)
                          and any(isinstance(k, str) and k.lower() == "value" for k in op.value)):
        return False
    return any(isinstance(term, Comparison) and term.op == CompareOperator.eq
               and term.attr_path.attr.lower() == "value" for term in _and_terms(path.value_filter))


def _and_terms(node) -> list:
    """The comparisons a filter joins by `and` (the filter itself when it is one comparison)."""
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
        return [term for part in node.terms for term in _and_terms(part)]
    return [node]


def _selection(path):
    """The entries a filtered path selects, without its sub-attribute: `roles[value eq "x"]`."""
    return type(path)(f"{path.schema + ':' if path.schema else ''}{path.parts[0]}[{path.value_filter}]")


def _patched(current, patch_op, operations) -> bool:
    return bool(operations) and patch_op.model_copy(update={"operations": operations}).patch(current)


def _selected_removal(op, state):
    """A Remove of `path` naming the plain `value`, against the person as `state` holds them, as a
    Remove without value, or None when it removes nothing. On a single-valued attribute the value
    must be the one held; on a multi-valued one (filtered or not) it selects the entries whose
    sub-attribute (or `value`, RFC 7643 2.4) it is, within the filter. An attribute not kept is
    dropped by the policy, value or not; a path naming a schema is the library's to refuse."""
    path, value = op.path, op.value
    binding = path.resolve()
    if binding is None:
        return op.model_copy(update={"value": None}) if path.model is None else op
    if path.value_filter is None and not binding.is_multivalued:
        held = path.get(state)
        same = comparison_key(binding, held) == comparison_key(binding, value) \
            if isinstance(held, str) and isinstance(value, str) else type(held) is type(value) and held == value
        return op.model_copy(update={"value": None}) if same else None
    head, sub = path.parts[0], path.parts[1] if len(path.parts) > 1 else None
    try:
        selector = Comparison(AttrPath(sub or "value"), CompareOperator.eq, value)
        selection = selector if path.value_filter is None else path.value_filter & selector
        selected = type(path)(f"{path.schema + ':' if path.schema else ''}{head}[{selection}]"
                              f"{'.' + sub if sub else ''}")
    except (TypeError, ValueError) as exc:
        raise InvalidValueException(detail=f"the value of a remove of {str(path)[:100]!r}: {exc}") from exc
    if not selected.get(state):
        return None
    return op.model_copy(update={"path": selected, "value": None})


_MESSAGE_SCHEMAS = {"urn:ietf:params:scim:api:messages:2.0:patchop",
                    "urn:ietf:params:scim:api:messages:2.0:searchrequest"}
_KNOWN_SCHEMAS = {str(resources.User.__schema__).lower(), *_MESSAGE_SCHEMAS}


class PortalScimHandler(ScimHandler):
    """scim2-server's handler, except that a PATCH or PUT that changes nothing still writes a person
    whose email move or `active` change stopped midway (store.py: PendingEmailKeys, PendingActive,
    TableScimStorage.settle), so that write finishes or undoes it."""

    def patch_resource(self, resource_type, resource_id, patch_op, conditions):
        return self.storage.settle(resource_type, super().patch_resource(resource_type, resource_id, patch_op,
                                                                         conditions))

    def replace_resource(self, resource_type, current, replacement, conditions):
        return self.storage.settle(resource_type, super().replace_resource(resource_type, current, replacement,
                                                                           conditions))


class Engine:
    """Built once per worker (the provider and service are immutable); a storage per request."""

    def __init__(self):
        self.provider = resources.provider()
        self.service = PortalScimService(self.provider)

    def handle(self, request: ScimRequest, storage_factory) -> ScimResponse:
        """scim2-server's handling under the Entra-tolerant policy, each attempt with a new storage from
        `storage_factory` (the last one built answered). A SCIMException becomes its SCIM error; a race
        lost to a concurrent write (Raced) is retried from fresh reads, with the keys the lost attempts
        wrote accounts at (store.py TableScimStorage.carry). Anything else (DependencyUnavailable, a
        bug) is the caller's."""
        carried: list[str] = []
        owner, wrote_active = "", False
        with POLICY:
            for attempt in range(RACE_ATTEMPTS):
                storage = storage_factory()
                storage.carry(carried, wrote_active)
                try:
                    return PortalScimHandler(self.service, storage).handle(request)
                except Raced as exc:
                    carried += exc.keys
                    owner, wrote_active = exc.scim_id or owner, wrote_active or exc.active
                    if attempt == RACE_ATTEMPTS - 1:
                        error: SCIMException = PreconditionFailedException(detail=exc.detail)
                        break
                    time.sleep(RACE_PAUSE * (attempt + 1) * (0.5 + random.random()))  # noqa: S311 - jitter
                except NotFoundException as exc:  # the person is gone: so are the rows (store.py _gone)
                    return self.service.error_response(exc)
                except SCIMException as exc:
                    error = exc
                    break
            # Answered unsettled (given up, or refused after losing races): what the lost attempts
            # wrote is recorded on the person row, never dropped, and settled by rewriting the person.
            if carried and owner:
                storage.leave_pending(owner, carried, wrote_active)
                storage_factory().settle_pending(owner)
            return self.service.error_response(error)


def response_json(response: ScimResponse) -> str:
    return "" if response.body is None or response.status == HTTPStatus.NO_CONTENT else \
        json.dumps(response.body, separators=(",", ":"), ensure_ascii=False)


def storage(users, accounts, default_kind, tenant) -> TableScimStorage:
    return TableScimStorage(users, accounts, default_kind, tenant)
