"""Schemathesis hooks for .ci/api-fuzz: make `{id}` and `{turnId}` name real things.

Without this almost every case on /text/session/{id}/... would stop at
`404 session_not_found` and the bodies would never be checked. So, for each case
whose path has `{id}`:

* each operation gets a session of its own (created lazily through the API, with one
  message so that it has a completed turn), which keeps histories short;
* `DELETE /text/session/{id}` gets a fresh session per case, so it never deletes
  the others';
* `{id}` (and `{turnId}`) are replaced by those real ids, except when schemathesis
  generated the path parameters as negative data, in the stateful phase (where ids
  come from earlier responses), and in every 10th case anyway, so that the 404
  answers are still exercised;
* in positive cases, `Last-Event-ID` is made `<turnId>:<seq>` of that turn (on the
  session's feed, and its `lastEventId`, `<version>:<seq>` of a version it has),
  `If-Match` the session's current ETag, a body's `provider` `echo`, a fork's `upTo`
  at most the session's messages, and tools with a name already used are dropped: the
  schema cannot say "a configured provider", "an event of this turn", "the current
  version", "no more than it holds" or "unique names";
* a valid `Idempotency-Key` gets a suffix unique to the request: schemathesis reuses
  small keys like "0" with other bodies, which is rightly `422 idempotency_key_reused`,
  or with the same body, which replays an old answer whatever the other headers say.

And one failure is dropped: "deleted resource still available" after
`DELETE /text/session/{id}/turns/{turnId}`, which by design keeps the turn's record
(a waiting turn becomes `cancelled`, an ended one is unchanged).

The server's base URL comes from API_FUZZ_BASE_URL (set by .ci/api-fuzz).
"""

import itertools
import json
import os
import re
import threading
import urllib.request

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase
from schemathesis.openapi.checks import UseAfterFree

BASE_URL = os.environ["API_FUZZ_BASE_URL"].rstrip("/")
KEEP_EVERY = 10  # every KEEP_EVERY-th (positive) case keeps its generated ids
VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")

_lock = threading.Lock()
_per_operation: dict[str, tuple[str, str]] = {}
_counter = itertools.count(1)
_keys = itertools.count(1)


def _post(path: str, body: dict) -> dict:
    request = urllib.request.Request(
        BASE_URL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _new_session() -> str:
    return _post("/text/session", {"metadata": {"by": "api-fuzz"}})["session"]["id"]


def _session_with_turn() -> tuple[str, str]:
    session_id = _new_session()
    turn_id = _post(f"/text/session/{session_id}/message", {"content": "hello"})["turnId"]
    return session_id, turn_id


def _etag(session_id: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{BASE_URL}/text/session/{session_id}", timeout=10) as response:
            return response.headers.get("etag")
    except (OSError, ValueError):
        return None


def _is_negative(case, location) -> bool:
    return case.meta is not None and case.meta.is_negative_at(location)


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if isinstance(body, dict) and not _is_negative(case, ParameterLocation.BODY):
        if isinstance(body.get("provider"), str):
            body["provider"] = "echo"
        if isinstance(body.get("tools"), list):
            # Tool names must be unique in a session, which JSON Schema cannot say.
            names = set()
            body["tools"] = [
                tool
                for tool in body["tools"]
                if not isinstance(tool, dict) or not (tool.get("name") in names or names.add(tool.get("name")))
            ]
    headers = case.headers
    key = headers.get("Idempotency-Key") if headers else None
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        # Checked on the key itself: another header may be the negative one.
        headers["Idempotency-Key"] = f"{key[:200]}~{next(_keys)}"
    params = case.path_parameters
    if not params or "id" not in params or _is_negative(case, ParameterLocation.PATH):
        return case
    if case.meta is not None and case.meta.phase.name == TestPhase.STATEFUL:
        pass  # there the ids come from earlier responses (OpenAPI links)
    elif case.method.upper() == "DELETE" and case.path == "/text/session/{id}":
        # Always a fresh one: a generated id may be a real one (schemathesis reuses
        # ids from earlier responses) and deleting it would starve other operations.
        params["id"] = _new_session()
    elif next(_counter) % KEEP_EVERY != 0:
        with _lock:
            if case.operation.label not in _per_operation:
                _per_operation[case.operation.label] = _session_with_turn()
            session_id, turn_id = _per_operation[case.operation.label]
        params["id"] = session_id
        if "turnId" in params:
            params["turnId"] = turn_id
    feed = case.path == "/text/session/{id}/events"
    if headers and "Last-Event-ID" in headers and not _is_negative(case, ParameterLocation.HEADER):
        seq = len(str(headers["Last-Event-ID"])) % 4
        # A turn's events are `<turnId>:<seq>`; the session's feed's `<version>:<seq>`.
        headers["Last-Event-ID"] = f"2:{seq}" if feed else f"{params.get('turnId')}:{seq}"
    query = case.query
    if feed and query and "lastEventId" in query and not _is_negative(case, ParameterLocation.QUERY):
        query["lastEventId"] = f"2:{len(str(query['lastEventId'])) % 4}"
    if (
        case.path == "/text/session/{id}/fork"
        and isinstance(body, dict)
        and isinstance(body.get("upTo"), int)
        and not _is_negative(case, ParameterLocation.BODY)
    ):
        # At most the messages the source holds (two, in the sessions made here).
        body["upTo"] = body["upTo"] % 3
    return case


@schemathesis.hook
def before_call(context, case, kwargs):
    # Here, not in map_case: cases may be generated well before they are sent.
    headers = case.headers
    if headers and "If-Match" in headers and not _is_negative(case, ParameterLocation.HEADER):
        etag = _etag(str((case.path_parameters or {}).get("id")))
        if etag is not None:
            headers["If-Match"] = etag


@schemathesis.hook
def filter_failure(context, failure, case, response):
    return not (isinstance(failure, UseAfterFree) and "/turns/" in failure.free)
