"""One conversation through the Python client generated from openapi/openapi.json
(openapi-python-client), against a running service: create with a tool, a message,
every body form of tool-output and instructions, get, list, a fork, a streamed message,
delete. Type-checked with `mypy --strict` first; exits non-zero on the first surprise.

    BASE_URL=http://127.0.0.1:8080 python roundtrip.py
"""

import json
import os
import sys

from text_session_api_client import Client
from text_session_api_client.api.sessions import (
    create_session,
    delete_session,
    fork_session,
    get_session,
    list_sessions,
)
from text_session_api_client.api.writes import post_instructions, post_message, post_tool_output
from text_session_api_client.models import (
    CreateSessionRequest,
    ErrorBody,
    ForkRequest,
    InstructionsBodyType0,
    MessageRequest,
    SessionListResponse,
    SessionResponse,
    Tool,
    ToolOutputBodyType0,
    ToolOutputBodyType1Item,
    ToolOutputBodyType2,
    ToolOutputInput,
    ToolOutputResponse,
    ToolParameters,
    WriteResponse,
)


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"roundtrip (python): {what}", file=sys.stderr)
        sys.exit(1)


def written(answer: WriteResponse | ToolOutputResponse | ErrorBody | None) -> int:
    """The version a write's answer shows; fails on anything but success."""
    check(
        isinstance(answer, (WriteResponse, ToolOutputResponse)),
        f"a write failed: {answer!r}",
    )
    assert isinstance(answer, (WriteResponse, ToolOutputResponse))
    return answer.session.version


def main() -> None:
    client = Client(base_url=os.environ.get("BASE_URL", "http://127.0.0.1:8080"))

    parameters = ToolParameters.from_dict(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    tool = Tool(name="get_weather", description="Current weather", parameters=parameters)
    created = create_session.sync(
        client=client,
        body=CreateSessionRequest(instructions="Be brief.", tools=[tool]),
    )
    check(isinstance(created, SessionResponse), f"create: {created!r}")
    assert isinstance(created, SessionResponse)
    session_id = str(created.session.id)
    check(created.session.tools[0].name == "get_weather", "the tool comes back")

    reply = post_message.sync(session_id, client=client, body=MessageRequest(content="Hello"))
    check(isinstance(reply, WriteResponse), f"message: {reply!r}")
    assert isinstance(reply, WriteResponse)
    check(reply.result.text == "echo: Hello", f"the reply: {reply.result.text}")
    messages = reply.session.messages
    check(isinstance(messages, list) and len(messages) == 3, "the whole history comes back")
    check(len(reply.session.new_messages) == 2, "and what the write appended")

    # Every body form of /tool-output: the object, a bare array, one output; outputs
    # of any JSON type.
    forms: list[ToolOutputBodyType0 | list[ToolOutputBodyType1Item] | ToolOutputBodyType2] = [
        ToolOutputBodyType0(tool_outputs=[ToolOutputInput(call_id="c1", output="sunny")]),
        [ToolOutputBodyType1Item(call_id="c2", output={"temperature": 21})],
        ToolOutputBodyType2(call_id="c3", output=[1, 2, 3]),
    ]
    for body in forms:
        written(post_tool_output.sync(session_id, client=client, body=body))

    # Every body form of /instructions: the object, a bare string, a bare array.
    instruction_forms: list[InstructionsBodyType0 | str | list[str]] = [
        InstructionsBodyType0(instructions="Answer in French."),
        "Answer in English.",
        ["Be kind.", "Be brief."],
    ]
    for instructions in instruction_forms:
        written(post_instructions.sync(session_id, client=client, body=instructions))

    got = get_session.sync(session_id, client=client)
    check(isinstance(got, SessionResponse), f"get: {got!r}")
    assert isinstance(got, SessionResponse)
    contents = [m.content for m in got.session.messages]
    check("Tool output (c2): {\"temperature\":21}" in contents, f"the outputs: {contents}")
    check(got.session.version == 8, f"eight commits: {got.session.version}")

    listed = list_sessions.sync(client=client)
    check(isinstance(listed, SessionListResponse), f"list: {listed!r}")
    assert isinstance(listed, SessionListResponse)
    check(any(str(s.id) == session_id for s in listed.sessions), "the session is listed")

    forked = fork_session.sync(session_id, client=client, body=ForkRequest(up_to=2))
    check(isinstance(forked, SessionResponse), f"fork: {forked!r}")
    assert isinstance(forked, SessionResponse)
    check(len(forked.session.messages) == 2, "the fork starts with the first two")

    # A streamed message: Server-Sent Events, read with the client's own HTTP client.
    names = []
    with client.get_httpx_client().stream(
        "POST",
        f"/text/session/{session_id}/message",
        json={"content": "Stream this", "stream": True},
    ) as stream:
        check(stream.status_code == 200, f"stream: {stream.status_code}")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                names.append(line[len("event: "):])
            if line.startswith("data: ") and names and names[-1] == "turn.completed":
                completed = json.loads(line[len("data: "):])
                check(completed["result"]["text"] == "echo: Stream this", "the streamed reply")
    check(names[0] == "turn.started" and names[-1] == "turn.completed", f"events: {names}")

    deleted = delete_session.sync_detailed(session_id, client=client)
    check(deleted.status_code == 200, f"delete: {deleted.status_code}")
    gone = get_session.sync(session_id, client=client)
    check(isinstance(gone, ErrorBody), "the session is gone")
    print("roundtrip (python): ok")


if __name__ == "__main__":
    main()
