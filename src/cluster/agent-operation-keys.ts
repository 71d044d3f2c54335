/**
 * The store keys of agent operations: one record per operation under
 * {@link OPERATIONS_PREFIX}, and the guard of a VM's operations waiting for
 * its node. Re-exported by agent-operations.ts, whose records they name.
 */

/** Key family of agent operations: operations/<node>/<operation id>. */
export const OPERATIONS_PREFIX = "operations/";

/** The key of one operation. */
export function operationKey(nodeId: string, operationId: string): string {
  return `${OPERATIONS_PREFIX}${nodeId}/${operationId}`;
}

/**
 * The guard of a VM's operations waiting for its node while the node is not
 * ready: written with each one, so that counting them and writing one is a
 * single compare-and-swap (calls at once each counted the same waiting ones).
 * One empty key per VM that ever waited, removed with the VM's record
 * (vm-operation-settler.ts); never under {@link OPERATIONS_PREFIX}.
 */
export function waitingGuardKey(nodeId: string, vmId: string): string {
  return `operations-waiting/${nodeId}/${vmId}`;
}

/** The node and operation ids of an operation key, or undefined for another key. */
export function parseOperationKey(
  key: string,
): { nodeId: string; operationId: string } | undefined {
  if (!key.startsWith(OPERATIONS_PREFIX)) return undefined;
  const rest = key.slice(OPERATIONS_PREFIX.length);
  const slash = rest.indexOf("/");
  if (slash <= 0 || slash === rest.length - 1) return undefined;
  return { nodeId: rest.slice(0, slash), operationId: rest.slice(slash + 1) };
}
