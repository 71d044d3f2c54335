/**
 * Adoption of an operation whose claiming control-plane process died
 * mid-way: this process claims it from the dead one and settles it from what
 * the hypervisor shows, as an agent settles its journal after a restart.
 */
import { create } from "@bufbuild/protobuf";
import {
  createMemoryJournal,
  createOperationExecutor,
  type OperationJournal,
} from "../drivers/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import type { LocalOperationClaim } from "./local-operation-claim.js";
import type { LocalOperationRunnerOptions } from "./local-operation-runner.js";
import { isRunnerId } from "./runner-registry.js";

/** Dependencies of {@link createLocalOperationAdopt}: the runner's options it needs, its claim and its recorder. */
export interface LocalOperationAdoptDeps
  extends Pick<
    LocalOperationRunnerOptions,
    "logger" | "signal" | "nodes" | "driver" | "servedByAgent" | "runnerId" | "isRunnerAlive"
  > {
  readonly claim: LocalOperationClaim;
  /** Records an executor's progress or result. */
  readonly write: (nodeId: string, kind: AgentMessage["kind"]) => void;
}

/**
 * Takes over an operation whose claimer died mid-way (its registry key is
 * gone): settled from what the hypervisor shows, as an agent settles its
 * journal after a restart (a start whose VM runs is done, one whose VM
 * does not has not acted and runs now; see the executor's `recover`), so
 * it is neither lost nor run twice. Claims that are not registry ids
 * (older daemons) are left alone: their liveness cannot be told.
 */
export type LocalOperationAdopt = (record: OperationRecord) => Promise<void>;

/** Makes the {@link LocalOperationAdopt} of this process. */
export function createLocalOperationAdopt(deps: LocalOperationAdoptDeps): LocalOperationAdopt {
  const { logger, signal, claim, write } = deps;
  return async function adopt(record: OperationRecord): Promise<void> {
    const node = record.nodeId;
    const dispatch = record.dispatch;
    const by = record.deliveredBy;
    if (dispatch === undefined || by === deps.runnerId || !isRunnerId(by)) return;
    if (record.phase !== OperationPhase.DELIVERED && record.phase !== OperationPhase.RUNNING)
      return;
    if (!deps.nodes().includes(node) || deps.servedByAgent(node)) return;
    const driver = deps.driver(node);
    if (driver === undefined || (await deps.isRunnerAlive(by, signal))) return;
    if (!(await claim(record, by))) return;
    logger.warn(
      { node, operation: dispatch.operationId, from: by },
      "adopting an operation its process left",
    );
    // Its own executor and journal: `recover` settles every unfinished entry of its journal.
    const inner = createMemoryJournal();
    const journal: OperationJournal = {
      ...inner,
      finish(result) {
        inner.finish(result);
        write(node, { case: "result", value: result });
      },
    };
    journal.begin(dispatch);
    await createOperationExecutor({
      driver,
      journal,
      logger: logger.child({ node, runner: "local" }),
      signal,
      send: (m) => write(node, create(AgentMessageSchema, m).kind),
    }).recover();
  };
}
