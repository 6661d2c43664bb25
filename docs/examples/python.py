"""A conversation with the Python client generated from openapi/openapi.json
(openapi-python-client); type-checked with mypy --strict."""

import os

from text_session_api_client import AuthenticatedClient, Client
from text_session_api_client.api.sessions import create_session, delete_session
from text_session_api_client.api.writes import post_message, post_tool_output
from text_session_api_client.models import (
    CreateSessionRequest,
    MessageRequest,
    SessionResponse,
    Tool,
    ToolOutputBodyType2,
    ToolParameters,
    WriteResponse,
)

base_url = os.environ.get("BASE_URL", "http://127.0.0.1:8080")
api_key = os.environ.get("API_KEY")
client: AuthenticatedClient | Client = (
    AuthenticatedClient(base_url=base_url, token=api_key) if api_key else Client(base_url=base_url)
)

weather = Tool(
    name="get_weather",
    description="Current weather in a city",
    parameters=ToolParameters.from_dict(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
created = create_session.sync(client=client, body=CreateSessionRequest(instructions="You are terse.", tools=[weather]))
if not isinstance(created, SessionResponse):
    raise SystemExit(f"create: {created}")
session_id = str(created.session.id)

reply = post_message.sync(session_id, client=client, body=MessageRequest(content="Hello there"))
if not isinstance(reply, WriteResponse):
    raise SystemExit(f"message: {reply}")  # an ErrorBody: reply.error.code, reply.error.message
print(reply.result.text)
for call in reply.result.tool_calls:  # what the model asked for; answer with /tool-output
    post_tool_output.sync(session_id, client=client, body=ToolOutputBodyType2(call_id=call.id, output={"temperature": 21}))

delete_session.sync(session_id, client=client)
