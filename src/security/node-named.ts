// Whether a name belongs to a node: the checks that keep a node's identity a
// cluster admin's to hand out (tokens, certificates, bindings).
import { EnrollmentTokenRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, rangeAll } from "../store/index.js";
import type { EnrollmentServiceDeps } from "./enrollment-service.js";
import { TOKEN_RECORDS } from "./enrollment-token.js";

/**
 * Whether `name` is a node's: registered, named by an enrollment token (a
 * node about to enrol), or bound to the node role. Node ids are lower-case,
 * so a name is compared lower-cased. Only a cluster admin may mint
 * credentials or bindings for such a name.
 */
export async function nodeNamed(
  deps: Pick<EnrollmentServiceDeps, "store" | "bindings" | "policy" | "isNode">,
  name: string,
  signal: AbortSignal,
): Promise<boolean> {
  const id = name.toLowerCase();
  const bound = [...deps.bindings.all(), ...deps.policy().bindings].some(
    (b) => b.principal.toLowerCase() === id && b.roles.includes("node"),
  );
  if (bound || ((await deps.isNode?.(id, signal)) ?? false)) return true;
  for await (const kv of rangeAll(deps.store, TOKEN_RECORDS, { signal })) {
    if (decodeMessage(EnrollmentTokenRecordSchema, kv).nodeName === id) return true;
  }
  return false;
}

/**
 * Whether `name` is a node that exists: registered, or holding the node role
 * cluster-wide (what enrollment gives). Its certificates renew for a full
 * term, and a new token for it is a cluster admin's. Narrower than
 * {@link nodeNamed}: a binding to the node role in a tenant, which a tenant
 * admin may set, makes no certificate last longer.
 */
export async function clusterNode(
  deps: Pick<EnrollmentServiceDeps, "bindings" | "policy" | "isNode">,
  name: string,
  signal: AbortSignal,
): Promise<boolean> {
  const id = name.toLowerCase();
  const bound = [...deps.bindings.all(), ...deps.policy().bindings].some(
    (b) => b.principal.toLowerCase() === id && (b.tenant ?? "") === "" && b.roles.includes("node"),
  );
  return bound || ((await deps.isNode?.(id, signal)) ?? false);
}
