"""Drives the memory's MCP server with the official MCP Python SDK client (PyPI `mcp`).

Run by `tests/tests/mcp_python_client.rs` over both transports:

    python mcp_client_check.py stdio <memory binary> <data dir> <phase>
    python mcp_client_check.py http <url> <token or -> <phase>

Phases:
- `record`: initialize (server info, instructions), list tools (every tool has an input and
  an output schema; the SDK checks each structured result against its tool's output schema),
  the record -> recommend -> feedback cycle, recommend within a token budget, and bad calls
  answered as tool errors with a structured `error.kind`.
- `again`: after a restart of the server on the same data directory, the episode recorded
  before is recommended, with its pattern.
- `unauthorized` (http): a client without the bearer token is refused.

Over HTTP the SDK's warnings are collected too (a session it cannot close, for one): any
warning fails the check.

Prints one JSON object on its last line: {"ok": true, ...} or {"ok": false, "error": ...}.
"""

import asyncio
import json
import logging
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

NS = "python/client"
TASK = "fix the flaky invoice test in the billing service"
CONTEXT = {"domain": "billing", "language": "python", "framework": "pytest"}
TOOLS = {
    "recommend", "start_episode", "log_step", "complete_episode", "record_feedback",
    "search_episodes", "show_episode", "forget_episode", "correct_learned", "list_learned",
    "stats", "health",
}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def structured(result, tool):
    check(not result.is_error, f"{tool} failed: {result.structured_content or result.content}")
    check(isinstance(result.structured_content, dict), f"{tool}: no structured content")
    return result.structured_content


def error_kind(result, tool):
    check(result.is_error, f"{tool} should have failed")
    return result.structured_content["error"]["kind"]


async def record(session, report):
    init = report["init"]
    check(init.server_info.name == "memory", f"server name {init.server_info.name}")
    check("recommend" in (init.instructions or ""), "instructions name recommend")
    check("rate_limited" in (init.instructions or ""), "instructions say how to back off")
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    check(names == TOOLS, f"tools {sorted(names)}")
    for t in tools:
        check(t.input_schema.get("type") == "object", f"{t.name} input schema")
        check(t.output_schema and t.output_schema.get("type") == "object", f"{t.name} output schema")
    report["tools"] = len(tools)

    started = structured(await session.call_tool("start_episode", {
        "task": TASK, "task_type": "testing", "context": CONTEXT, "namespace": NS,
    }), "start_episode")
    episode = started["episode_id"]
    for tool, action, status, output in [
        ("pytest", "run the invoice tests", "error", "AssertionError: due date off by one day"),
        ("edit_file", "freeze time with a fake clock", "success", "edit applied"),
        ("pytest", "run the invoice tests", "success", "14 passed"),
    ]:
        logged = structured(await session.call_tool("log_step", {
            "episode_id": episode, "tool": tool, "action": action, "status": status,
            "output": output, "namespace": NS,
        }), "log_step")
        check(logged["logged"] is True, "step logged")
    done = structured(await session.call_tool("complete_episode", {
        "episode_id": episode, "outcome": "success", "verdict": "stable again", "namespace": NS,
    }), "complete_episode")
    check(done["report"]["reward"]["total"] > 0, "reward")

    rec = structured(await session.call_tool("recommend", {
        "task": "the invoice test is flaky again", "task_type": "testing",
        "context": CONTEXT, "namespace": NS,
    }), "recommend")
    patterns = rec["recommendation"]["patterns"]
    check(len(patterns) > 0, "recommend returns the learned patterns")
    check([s["tool"] for s in rec["recommendation"]["playbook"]][:1] in (["pytest"], ["edit_file"]),
          f"playbook {rec['recommendation']['playbook']}")
    small = structured(await session.call_tool("recommend", {
        "task": "the invoice test is flaky again", "context": CONTEXT, "namespace": NS,
        "max_tokens": 200,
    }), "recommend")
    check(small["truncated"] is True, "a small budget leaves items out")
    check(small["approx_tokens"] < rec["approx_tokens"], "and the answer is smaller")

    fb = structured(await session.call_tool("record_feedback", {
        "target_kind": "pattern", "target_id": patterns[0]["item"]["id"],
        "episode_id": episode, "outcome": "helped", "namespace": NS,
    }), "record_feedback")
    check(fb["recorded"] is True, "feedback recorded")
    shown = structured(await session.call_tool("show_episode", {
        "episode_id": episode, "namespace": NS}), "show_episode")
    check(len(shown["episode"]["steps"]) == 3, "three steps stored")
    structured(await session.call_tool("stats", {"namespace": NS}), "stats")
    health = structured(await session.call_tool("health", {}), "health")
    check(health["healthy"] is True, f"healthy: {health}")

    # Bad calls come back as tool errors the agent can act on.
    unknown = await session.call_tool("log_step", {
        "episode_id": "01936f0e-1b2c-7d3e-8f40-123456789abc", "tool": "x", "action": "y",
        "status": "success", "output": "z", "namespace": NS,
    })
    check(error_kind(unknown, "log_step") == "not_found", "unknown episode")
    missing = await session.call_tool("start_episode", {"namespace": NS})
    check(error_kind(missing, "start_episode") == "invalid_arguments", "missing argument")
    late = await session.call_tool("log_step", {
        "episode_id": episode, "tool": "x", "action": "y", "status": "success", "output": "z",
        "namespace": NS,
    })
    check(error_kind(late, "log_step") == "conflict", "step after completion")
    report["episode"] = episode


async def again(session, report):
    rec = structured(await session.call_tool("recommend", {
        "task": "the invoice test is flaky again", "task_type": "testing",
        "context": CONTEXT, "namespace": NS,
    }), "recommend")
    check(len(rec["recommendation"]["episodes"]) > 0, "the episode from before the restart")
    check(len(rec["recommendation"]["patterns"]) > 0, "and its patterns")
    learned = structured(await session.call_tool("list_learned", {
        "kind": "patterns", "namespace": NS}), "list_learned")
    helped = [i for i in learned["items"] if i["pattern"]["effectiveness"]["helped"] > 0]
    check(len(helped) == 1, "the feedback given before the restart")
    pinned = structured(await session.call_tool("correct_learned", {
        "kind": "pattern", "id": helped[0]["pattern"]["id"], "action": "pin",
        "reason": "the team's procedure", "namespace": NS,
    }), "correct_learned")
    check(pinned["item"]["item"]["pinned"]["reason"] == "the team's procedure", f"pinned: {pinned}")

    # Forgotten: the episode, its feedback and what only it taught are gone.
    episode = rec["recommendation"]["episodes"][0]["episode"]["id"]
    gone = structured(await session.call_tool("forget_episode", {
        "episode_ids": [episode], "reason": "client check", "namespace": NS,
    }), "forget_episode")
    check(gone["forgotten"] == [episode], f"forgotten: {gone}")
    shown = await session.call_tool("show_episode", {"episode_id": episode, "namespace": NS})
    check(error_kind(shown, "show_episode") == "not_found", "the episode is gone")
    learned = structured(await session.call_tool("list_learned", {
        "kind": "patterns", "namespace": NS}), "list_learned")
    check(learned["items"] == [], f"no pattern left: {learned['items']}")


async def run(session, phase, report):
    report["init"] = await session.initialize()
    if phase == "record":
        await record(session, report)
    else:
        await again(session, report)
    del report["init"]


def leaves(e):
    """The innermost exceptions of a (nested) exception group."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for inner in e.exceptions for leaf in leaves(inner)]
    return [e]


class Warnings(logging.Handler):
    """Collects the warnings the SDK logs (it logs, rather than raises, some failures)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def main():
    transport, target, extra, phase = sys.argv[1:5]
    report = {"transport": transport, "phase": phase}
    warnings = Warnings()
    logging.getLogger("mcp").addHandler(warnings)
    try:
        if transport == "stdio":
            params = StdioServerParameters(
                command=target, args=["--data-dir", extra, "--namespace", NS, "mcp"],
                env={"RUST_LOG": "warn"})
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await run(session, phase, report)
        else:
            headers = {} if extra == "-" else {"Authorization": f"Bearer {extra}"}
            client = create_mcp_http_client(headers=headers)
            if phase == "unauthorized":
                response = await client.post(target, json={}, headers={
                    "accept": "application/json, text/event-stream"})
                check(response.status_code == 401, f"status {response.status_code}")
                report["status"] = response.status_code
            else:
                async with streamable_http_client(target, http_client=client) as streams:
                    read, write = streams[0], streams[1]
                    async with ClientSession(read, write) as session:
                        await run(session, phase, report)
        check(not warnings.messages, f"the SDK warned: {warnings.messages}")
        report["ok"] = True
    except BaseException as e:  # noqa: BLE001 - reported to the Rust test
        report.pop("init", None)
        report["ok"] = False
        report["error"] = "; ".join(f"{type(x).__name__}: {x}" for x in leaves(e))
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    asyncio.run(main())
