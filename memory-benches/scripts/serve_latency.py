"""Latency of `recommend` through `memory serve` (streamable HTTP, model loaded once), against
`memory recommend` run as a fresh process each time.

    python serve_latency.py <memory binary> <empty data dir> [episodes] [calls]

Seeds the data directory through the server with `episodes` recorded episodes (varied tasks,
contexts and steps), then times `calls` recommend calls over one MCP session and `calls / 5`
fresh `memory recommend` processes (each loads the model and opens the stack). Prints the
median and 95th percentile of each, in milliseconds, as one JSON object. Needs the MCP
Python client (scripts/install-mcp-client.sh) and the embedding model.
"""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

DOMAINS = ["billing", "web_api", "databases", "search", "auth"]
LANGS = ["python", "rust", "go", "typescript"]
VERBS = ["fix the flaky", "add a retry to the", "speed up the", "add logging to the", "refactor the"]
NOUNS = ["invoice test", "login endpoint", "migration", "search index", "token refresh", "cron job"]


def task(i):
    return f"{VERBS[i % len(VERBS)]} {NOUNS[(i // 5) % len(NOUNS)]} ({i})"


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def call(session, tool, args):
    """One tool call; waits out `rate_limited` answers (the memory's per-namespace write limit)
    the way INSTRUCTIONS tell agents to."""
    while True:
        r = await session.call_tool(tool, args)
        err = (r.structured_content or {}).get("error") if r.is_error else None
        if err and err.get("kind") == "rate_limited":
            await asyncio.sleep(err.get("retry_after_ms", 10) / 1000)
            continue
        assert not r.is_error, r.structured_content
        return r


async def seed_and_time(url, episodes, calls):
    async with streamable_http_client(url) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            for i in range(episodes):
                ctx = {"domain": DOMAINS[i % 5], "language": LANGS[i % 4]}
                started = await call(session, "start_episode", {
                    "task": task(i), "task_type": "debugging", "context": ctx})
                eid = started.structured_content["episode_id"]
                for tool, status in [("pytest", "error"), ("edit_file", "success"), ("pytest", "success")]:
                    await call(session, "log_step", {
                        "episode_id": eid, "tool": tool, "action": f"{tool} step", "status": status,
                        "output": "AssertionError: off by one" if status == "error" else "ok"})
                await call(session, "complete_episode", {
                    "episode_id": eid, "outcome": "success", "verdict": "done"})
            # One call to drain the embedding queue before timing.
            await call(session, "recommend", {"task": task(0)})
            times = []
            for i in range(calls):
                ctx = {"domain": DOMAINS[i % 5], "language": LANGS[i % 4]}
                t = time.perf_counter()
                r = await session.call_tool("recommend", {
                    "task": task(i * 7 + 3), "task_type": "debugging", "context": ctx})
                times.append((time.perf_counter() - t) * 1000)
                assert not r.is_error, r.structured_content
            return times


def main():
    memory, data_dir = sys.argv[1], sys.argv[2]
    episodes = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn")
    server = subprocess.Popen(
        [memory, "--data-dir", data_dir, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        http = asyncio.run(seed_and_time(f"http://127.0.0.1:{port}/mcp", episodes, calls))
    finally:
        server.terminate()
        server.wait(timeout=30)
    fresh = []
    for i in range(max(5, calls // 5)):
        t = time.perf_counter()
        subprocess.run(
            [memory, "--data-dir", data_dir, "--json", "recommend", "--task", task(i * 7 + 3),
             "--type", "debugging", "--domain", DOMAINS[i % 5], "--language", LANGS[i % 4]],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fresh.append((time.perf_counter() - t) * 1000)
    print(json.dumps({
        "episodes": episodes,
        "http_recommend_ms": {"calls": len(http), "p50": round(statistics.median(http), 2),
                              "p95": round(percentile(http, 95), 2)},
        "fresh_process_recommend_ms": {"runs": len(fresh), "p50": round(statistics.median(fresh), 1),
                                       "p95": round(percentile(fresh, 95), 1)},
    }))


if __name__ == "__main__":
    main()
