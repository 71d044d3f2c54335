import { create } from "@bufbuild/protobuf";
import type { CallContext } from "./call-context.js";
import { silentLogger } from "./logger.js";
import type { ServiceBinding } from "./service-binding.js";

/**
 * A unary method's handler of `binding`, called as the transport calls it
 * once the pipeline has let the call through: for a cluster-wide caller, or
 * one confined to `tenant` (the scope the authorization stage gives it);
 * with `principal`, as that identity (an API key's, confined like the call).
 * Nothing else of the pipeline runs (no authentication, authorization,
 * validation or audit): for tests and benchmarks of a handler alone.
 */
export function handlerCall<Res>(
  binding: ServiceBinding,
  name: string,
): (request: object, tenant?: string, principal?: string) => Promise<Res> {
  const method = binding.methods.find((m) => m.spec.name === name);
  if (method === undefined) throw new Error(`${binding.desc.typeName} has no method ${name}`);
  const handler = method.handler as (request: object, ctx: CallContext) => Promise<Res>;
  return (request, tenant, principal) =>
    handler(create(method.spec.desc.input, request as never), {
      requestId: "direct",
      method: method.spec,
      peer: { address: "127.0.0.1:1" },
      headers: { get: () => undefined },
      deadline: undefined,
      signal: AbortSignal.timeout(10_000),
      startedAt: 0,
      ...(principal !== undefined && {
        principal: { id: principal, method: "apikey", roles: [], ...(tenant && { tenant }) },
      }),
      tenant,
      scope:
        tenant === undefined
          ? undefined
          : { tenant, clusterWide: false, canSee: (t: string) => t === tenant },
      log: silentLogger,
      notes: {},
    });
}
