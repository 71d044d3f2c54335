// An agent's stream driven in-process against the real AgentService.Connect
// handler (no transport): what it sends is pushed, what the hub answers is
// collected. Used where a test must act between two messages of one stream.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type AgentHub,
  createAgentExecutors,
  createAgentHub,
  createInventory,
  type Executors,
  type Inventory,
} from "../../src/cluster/index.js";
import {
  type CallContext,
  createManualClock,
  type ManualClock,
  silentLogger,
  systemClock,
} from "../../src/core/index.js";
import {
  type AgentMessage,
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
  type OperationDispatch,
  type OperationResultSchema,
} from "../../src/gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, type KvStore } from "../../src/store/index.js";

type AgentInit = MessageInitShape<typeof AgentMessageSchema>;

/** One agent stream, its Hello sent. */
export interface InProcessAgent {
  /** What the hub sent, in order. */
  readonly received: ControlMessage[];
  /** Sends `message`; the reference lets a test see when nothing holds it any more. */
  send(message: AgentInit): WeakRef<AgentMessage>;
  close(): Promise<void>;
}

/** Opens `nodeId`'s stream on `hub` as its node certificate would (mTLS, CN = node). */
export function connectInProcess(
  hub: AgentHub,
  nodeId: string,
  capabilities: readonly string[],
  /** The Hello's report stamp (ms); a test on a manual clock passes its time, see agent-vms-unchanged.test.ts. */
  helloAtMs = Date.now(),
): InProcessAgent {
  const method = hub.service.methods.find((m) => m.spec.name === "Connect");
  if (method === undefined) throw new Error("AgentService has no Connect");
  const ac = new AbortController();
  const ctx = {
    requestId: `test-${nodeId}`,
    method: method.spec,
    peer: { address: "127.0.0.1:1", certificate: { commonName: nodeId } },
    headers: { get: () => undefined },
    signal: ac.signal,
    startedAt: Date.now(),
    principal: { id: nodeId, method: "mtls", roles: [] },
    log: silentLogger,
    notes: {},
  } as unknown as CallContext;
  const inbox: AgentMessage[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  // A plain iterator that keeps nothing it has given: what keeps a sent
  // message (see send's WeakRef) is then the hub.
  const requests: AsyncIterableIterator<AgentMessage> = {
    async next() {
      for (;;) {
        const message = inbox.shift();
        if (message !== undefined) return { done: false, value: message };
        if (ended) return { done: true, value: undefined };
        await new Promise<void>((r) => (wake = r));
      }
    },
    [Symbol.asyncIterator]: () => requests,
  };
  const send = (m: AgentInit) => {
    const message = create(AgentMessageSchema, m);
    inbox.push(message);
    wake?.();
    return new WeakRef(message);
  };
  send({
    kind: {
      case: "hello",
      value: {
        info: { id: { id: nodeId }, hostname: `${nodeId}.test` },
        agentVersion: "test",
        capabilities: [...capabilities],
        health: {
          nodeId: { id: nodeId },
          timestamp: {
            seconds: BigInt(Math.floor(helloAtMs / 1000)),
            nanos: (helloAtMs % 1000) * 1e6,
          },
        },
      },
    },
  });
  const received: ControlMessage[] = [];
  const handler = method.handler as unknown as (
    req: AsyncIterable<AgentMessage>,
    ctx: CallContext,
  ) => AsyncIterable<MessageInitShape<typeof ControlMessageSchema>>;
  const running = (async () => {
    for await (const m of handler(requests, ctx)) received.push(create(ControlMessageSchema, m));
  })().catch(() => {});
  return {
    received,
    send,
    async close() {
      ended = true;
      wake?.();
      ac.abort();
      await running;
    },
  };
}

/** What an agent answers a dispatch with: its result, less the operation's id. */
export type DispatchAnswer = Omit<
  MessageInitShape<typeof OperationResultSchema>,
  "operationId" | "$typeName"
>;

/**
 * Answers each dispatch `agent` receives with `answer`'s result, as an
 * agent whose executor refused or ran it would; `stop` ends it. Looks every
 * 10 ms, for at most `timeoutMs` (default 60 s).
 */
export function answerDispatches(
  agent: InProcessAgent,
  answer: (dispatch: OperationDispatch) => DispatchAnswer,
  timeoutMs = 60_000,
): { stop(): Promise<void> } {
  let stopped = false;
  const until = Date.now() + timeoutMs;
  const running = (async () => {
    let seen = 0;
    while (!stopped && Date.now() < until) {
      for (; seen < agent.received.length; seen++) {
        const m = agent.received[seen];
        if (m?.kind.case !== "dispatch") continue;
        const dispatch = m.kind.value;
        const result = { ...answer(dispatch), operationId: dispatch.operationId };
        agent.send({ kind: { case: "result", value: result } });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await running;
    },
  };
}

/**
 * An agent hub and its inventory on `store`, on a manual clock, for in-process
 * streams; `wrap` gives the hub another view of the inventory (one that holds a
 * call back, say).
 */
export function hubOn(
  store: KvStore,
  wrap: (inventory: Inventory) => Inventory = (i) => i,
): {
  hub: AgentHub;
  inventory: Inventory;
  clock: ManualClock;
  close(): void;
} {
  const clock = createManualClock(Date.now());
  const inventory = createInventory({ store, clock });
  const hub = createAgentHub({
    store,
    inventory: wrap(inventory),
    clock,
    serverId: "rpcd-1",
    heartbeatIntervalMs: 1000,
    helloTimeoutMs: 5000,
    sendQueueMax: 1000,
  });
  return {
    hub,
    inventory,
    clock,
    close() {
      hub.close();
      inventory.close();
    },
  };
}

/**
 * A SQLite store with an agent hub on it (see {@link hubOn}) and the agent
 * executors the control plane calls nodes through: an operation for a node
 * goes to the stream a test opens with {@link connectInProcess}, and is not
 * taken after 10 s.
 */
export function executorsOnHub(): {
  store: KvStore;
  hub: AgentHub;
  executors: Executors;
  close(): Promise<void>;
} {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-agent-hub-")), "state.db"),
    logger: silentLogger,
  });
  const { hub, inventory, ...hubs } = hubOn(store);
  const executors = createAgentExecutors({
    store,
    inventory,
    operations: hub.operations,
    clock: systemClock,
    logger: silentLogger,
    deliveryTimeoutMs: 10_000,
  });
  return {
    store,
    hub,
    executors,
    async close() {
      hubs.close();
      await store.close();
    },
  };
}
