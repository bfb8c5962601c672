// A turnstore client for the runtime of the bug report (Node 20, fetch only): one turn with
// two parallel tool calls, persisted the way its runner emits them — text, call, call,
// result, result, usage, finish — each event acknowledged (durable) before the next.
//
//   node docs/http/client.mjs http://127.0.0.1:8080 conv-1 [token]

const [base, conversationId, token] = process.argv.slice(2);
const auth = token ? { Authorization: `Bearer ${token}` } : {};

async function call(method, path, body, headers = {}) {
  const response = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...auth, ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok) {
    // RFC 9457 problem: payload.error is the turnstore error (ConversationBusy -> the 409
    // the runtime shows as "busy")
    throw new Error(`${method} ${path}: ${response.status} ${payload.error}: ${payload.detail}`);
  }
  return payload;
}

// The runner's persister, backed by the service: one turn, events in order, with seq.
class TurnPersister {
  constructor(turn) {
    this.turn = turn;
    this.seq = 0;
    this.headers = { "Turn-Epoch": String(turn.epoch) };
  }
  async event(event) {
    const ack = await call("POST", `/v1/turns/${this.turn.turn_id}/events`,
      { seq: this.seq, events: [event] }, this.headers);
    this.seq += 1;
    return ack;
  }
  appendAssistantText(text) { return this.event({ type: "text", text }); }
  appendToolCall({ toolCallId, toolName, input }) {
    return this.event({ type: "tool_call", id: toolCallId, name: toolName, arguments: input });
  }
  appendToolResult({ toolCallId, ok, error }) {
    return this.event({ type: "tool_result", call_id: toolCallId,
      content: ok ? "ok" : (error ?? "error"), is_error: !ok });
  }
  recordUsage({ promptTokens, completionTokens, costUsd, cacheRead, cacheCreation }) {
    return call("POST", `/v1/turns/${this.turn.turn_id}/usage`, {
      prompt_tokens: promptTokens, completion_tokens: completionTokens,
      cache_read_tokens: cacheRead ?? 0, cache_creation_tokens: cacheCreation ?? 0,
      cost_usd: costUsd ?? null,
    }, { ...this.headers, "Idempotency-Key": `usage-${this.turn.turn_id}` });
  }
  finish(finalText) {
    return call("POST", `/v1/turns/${this.turn.turn_id}/finish`,
      finalText ? { final: { content: finalText } } : undefined, this.headers);
  }
  fail(reason) {
    return call("POST", `/v1/turns/${this.turn.turn_id}/fail`, { reason }, this.headers);
  }
}

const requestId = `req-${Date.now()}`; // the submit's idempotency key (a double click sends it twice)
const turn = await call("POST", `/v1/conversations/${conversationId}/turns`,
  { content: [{ type: "text", text: "Build a bakery page" }], on_busy: "fail" },
  { "Idempotency-Key": requestId });
if (turn.duplicate) {
  console.log(JSON.stringify(await call("GET", `/v1/turns/${turn.turn_id}/wait?timeout=30`)));
  process.exit(0);
}

const persister = new TurnPersister(turn);
try {
  // one model round: text, then both tool calls before any tool runs
  await persister.appendAssistantText("Let me add two sections.");
  await persister.appendToolCall({ toolCallId: "call_hero", toolName: "insertHtml",
    input: { html: "<section>hero</section>" } });
  await persister.appendToolCall({ toolCallId: "call_menu", toolName: "insertHtml",
    input: { html: "<section>menu</section>" } });
  // the tools run one after another; the step commits with its last result
  await persister.appendToolResult({ toolCallId: "call_hero", ok: true });
  const ack = await persister.appendToolResult({ toolCallId: "call_menu", ok: true });
  console.error(`step ${ack.committed} committed with both results`);
  await persister.recordUsage({ promptTokens: 1834, completionTokens: 96, costUsd: 0.0061,
    cacheRead: 1024 });
  const ended = await persister.finish("Done: hero and menu are on the page.");
  const history = await call("GET", `/v1/conversations/${conversationId}/messages`);
  console.log(JSON.stringify({ status: ended.status, steps: ended.steps,
    roles: history.messages.map((m) => m.role), usage: history.usage.conversation }));
} catch (error) {
  await persister.fail(String(error)).catch(() => {});
  throw error;
}
