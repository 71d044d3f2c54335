import type { ServiceClient } from "../client/index.js";
import { msFromTimestamp } from "../core/index.js";
import {
  ReplicationState,
  type ReplicationStatus,
  type StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import { CallError } from "./cli-errors.js";
import { shortAge } from "./output.js";

/** Options of {@link followReplication}. */
export interface FollowOptions {
  readonly client: ServiceClient<typeof StorageService>;
  readonly jobId: string;
  /** Stops following (the run itself goes on). */
  readonly signal: AbortSignal;
  /** Start a run now (`replication run`); otherwise follow the current or next one. */
  readonly start: boolean;
  /** Notes for people (stderr). */
  readonly note: (text: string) => void;
}

type Event =
  | { readonly kind: "state"; readonly result: IteratorResult<ReplicationStatus> }
  | { readonly kind: "ran"; readonly status: ReplicationStatus }
  | { readonly kind: "busy" };

const { REPL_STATE_RUNNING, REPL_STATE_SUCCESS, REPL_STATE_FAILED, REPL_STATE_UNKNOWN } =
  ReplicationState;

/**
 * Follows one run of a replication job over WatchReplication: yields its
 * states while it runs and then the state it ends in (SUCCESS or FAILED), or
 * UNKNOWN when the job is deleted. With `start` it also asks for a run
 * (RunZfsReplication, no deadline: a full send may take hours); a job already
 * running (the scheduler's run) is watched instead, with a note. Without
 * `start`, an idle job is followed through its next run.
 */
export async function* followReplication(
  options: FollowOptions,
): AsyncGenerator<ReplicationStatus> {
  const { client, jobId, note } = options;
  // Ours, so leaving the loop cancels the stream and a run call still waiting; the run goes on.
  const local = new AbortController();
  const signal = AbortSignal.any([options.signal, local.signal]);
  const states = client.watchReplication({ jobId }, { signal })[Symbol.asyncIterator]();
  const nextState = () => {
    const p = states.next().then((result): Event => ({ kind: "state", result }));
    p.catch(() => {});
    return p;
  };
  try {
    const first = await states.next();
    if (first.done) return;
    let running = first.value.state === REPL_STATE_RUNNING;
    if (first.value.state === REPL_STATE_UNKNOWN) {
      yield first.value;
      return;
    }
    let trigger: Promise<Event> | undefined;
    if (options.start) {
      trigger = client.runZfsReplication({ jobId }, { signal, timeoutMs: undefined }).then(
        (status): Event => ({ kind: "ran", status }),
        (err: unknown): Event => {
          if (
            err instanceof CallError &&
            err.trailer("debvisor-error-reason") === "REPLICATION_RUNNING"
          )
            return { kind: "busy" };
          throw err;
        },
      );
      trigger.catch(() => {});
    } else if (!running) {
      note(
        `replication ${jobId} is not running; waiting for its next run (${nextRunText(first.value)}); Ctrl-C to stop\n`,
      );
    }
    if (running) yield first.value;
    let pending = nextState();
    for (;;) {
      const event = await (trigger === undefined ? pending : Promise.race([pending, trigger]));
      if (event.kind === "ran") {
        yield event.status;
        return;
      }
      if (event.kind === "busy") {
        note(
          `replication ${jobId} is already running (started by the scheduler or another caller); watching that run\n`,
        );
        trigger = undefined;
        continue;
      }
      if (event.result.done) return;
      const s = event.result.value;
      pending = nextState();
      if (s.state === REPL_STATE_RUNNING) running = true;
      if (s.state === REPL_STATE_UNKNOWN || running) yield s;
      if (
        s.state === REPL_STATE_UNKNOWN ||
        (running && (s.state === REPL_STATE_SUCCESS || s.state === REPL_STATE_FAILED))
      )
        return;
    }
  } finally {
    local.abort();
  }
}

function nextRunText(s: ReplicationStatus): string {
  if (s.nextRun === undefined) return "not scheduled";
  const ms = msFromTimestamp(s.nextRun) - Date.now();
  return ms <= 0 ? "due now" : `in ${shortAge(ms)}`;
}
