import { defineService, RpcError, type ServiceBinding } from "../core/index.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb.js";

/** Serving state of the server and of each service, as `grpc.health.v1` reports it. */
export interface HealthState {
  /** Sets the state of one service; "" is the server as a whole. */
  set(service: string, status: ServingStatus): void;
  /** Sets every known service, and the server, at once (shutdown). */
  setAll(status: ServingStatus): void;
  get(service: string): ServingStatus | undefined;
  all(): ReadonlyMap<string, ServingStatus>;
}

/** Creates the health state; every named service starts NOT_SERVING until the daemon is ready. */
export function createHealthState(
  services: readonly string[],
): HealthState & { subscribe(fn: () => void): () => void } {
  const states = new Map<string, ServingStatus>([["", ServingStatus.NOT_SERVING]]);
  for (const s of services) states.set(s, ServingStatus.NOT_SERVING);
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const l of listeners) l();
  };
  return {
    set(service, status) {
      states.set(service, status);
      notify();
    },
    setAll(status) {
      for (const k of states.keys()) states.set(k, status);
      notify();
    },
    get: (service) => states.get(service),
    all: () => states,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}

/**
 * The standard gRPC health service. Public: load balancers and probes call it
 * without credentials, and it reveals nothing but serving state.
 */
export function createHealthService(
  state: ReturnType<typeof createHealthState>,
  /** Aborted when the daemon starts shutting down: open Watch streams end so draining is not held up. */
  closing: AbortSignal,
): ServiceBinding {
  const open = { permission: null, mutating: false, access: "public" } as const;
  return defineService(
    Health,
    { check: open, watch: open, list: open },
    {
      async check(req) {
        const status = state.get(req.service);
        if (status === undefined) throw new RpcError("SERVICE_UNKNOWN");
        return { status };
      },
      async *watch(req, ctx) {
        let last: ServingStatus | undefined;
        let wake: (() => void) | undefined;
        const unsubscribe = state.subscribe(() => wake?.());
        const onAbort = () => wake?.();
        ctx.signal.addEventListener("abort", onAbort);
        closing.addEventListener("abort", onAbort);
        try {
          while (!ctx.signal.aborted) {
            const status = state.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
            if (status !== last) {
              last = status;
              yield { status };
            }
            if (closing.aborted) return;
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
        } finally {
          unsubscribe();
          ctx.signal.removeEventListener("abort", onAbort);
          closing.removeEventListener("abort", onAbort);
        }
      },
      async list() {
        const statuses: Record<string, { status: ServingStatus }> = {};
        for (const [name, status] of state.all()) statuses[name] = { status };
        return { statuses };
      },
    },
  );
}
