"""One client process of the concurrent double-submit test (tests/test_http_faults.py).

    python tests/http_client_worker.py URL WORKER CONVERSATIONS KEYS OUT

Submits every (conversation, key) of the shared schedule, in an order of its own, each with
the key as its Idempotency-Key: every key is submitted by every worker at about the same
time. The worker whose submit is the turn (duplicate false) runs it as the runtime does
(text, call, call, result, result, usage, finish, with seq); the others wait for it. One
JSON line per submit goes to OUT."""

from __future__ import annotations

import json
import random
import sys

import httpx


def run_turn(c: httpx.Client, turn: dict[str, object], key: str) -> str:
    tid, headers = turn["turn_id"], {"Turn-Epoch": str(turn["epoch"])}
    events = [
        {"type": "text", "text": f"answer to {key}"},
        {"type": "tool_call", "id": f"{key}-a", "name": "insertHtml", "arguments": {"k": key}},
        {"type": "tool_call", "id": f"{key}-b", "name": "insertHtml", "arguments": {}},
        {"type": "tool_result", "call_id": f"{key}-a", "content": "a ok"},
        {"type": "tool_result", "call_id": f"{key}-b", "content": "b ok"},
    ]
    for seq, event in enumerate(events):
        r = c.post(f"/v1/turns/{tid}/events", json={"seq": seq, "events": [event]},
                   headers=headers)  # fmt: skip
        r.raise_for_status()
    c.post(f"/v1/turns/{tid}/usage", json={"prompt_tokens": 10, "completion_tokens": 1},
           headers={**headers, "Idempotency-Key": key}).raise_for_status()  # fmt: skip
    r = c.post(f"/v1/turns/{tid}/finish", json={"final": {"content": "done"}}, headers=headers)
    r.raise_for_status()
    return str(r.json()["status"])


def main() -> int:
    url, worker, conversations, keys, out = sys.argv[1:6]
    schedule = [
        (f"c{c}", f"c{c}-k{k}") for c in range(int(conversations)) for k in range(int(keys))
    ]
    random.Random(int(worker)).shuffle(schedule)
    with httpx.Client(base_url=url, timeout=120) as c, open(out, "w") as log:
        for conversation, key in schedule:
            r = c.post(f"/v1/conversations/{conversation}/turns",
                       json={"content": f"prompt {key}", "timeout": 60},
                       headers={"Idempotency-Key": key})  # fmt: skip
            r.raise_for_status()
            turn = r.json()
            if turn["duplicate"]:
                w = c.get(f"/v1/turns/{turn['turn_id']}/wait", params={"timeout": 60})
                status = w.json()["status"]
            else:
                status = run_turn(c, turn, key)
            record = {"key": key, "conversation": conversation, "turn_id": turn["turn_id"],
                      "duplicate": turn["duplicate"], "status": status}  # fmt: skip
            log.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
