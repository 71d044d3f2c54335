import type { DescMessage, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { CallContext } from "./call-context.js";
import type { MethodPolicy, MethodSpec, ResourceRef } from "./method-spec.js";

/** A unary handler: one request in, one response out. */
export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;

/** A server-streaming handler: one request in, a stream of responses out. */
export type ServerStreamHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** A bidirectional-streaming handler. */
export type BidiStreamHandler<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

type HandlerFor<M> = M extends {
  methodKind: infer K;
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? K extends "unary"
    ? UnaryHandler<I, O>
    : K extends "server_streaming"
      ? ServerStreamHandler<I, O>
      : K extends "bidi_streaming"
        ? BidiStreamHandler<I, O>
        : never
  : never;

/** Handlers for every method of a generated service, keyed by the method's local name. */
export type ServiceImpl<S extends GenService<GenServiceMethods>> = {
  [K in keyof S["method"]]: HandlerFor<S["method"][K]>;
};

/** Policies for every method of a generated service. */
export type ServicePolicy<S extends GenService<GenServiceMethods>> = {
  [K in keyof S["method"]]: MethodPolicy;
};

/** A handler of any kind, as the transport calls it. */
export type AnyHandler = (request: never, ctx: CallContext) => unknown;

/** One method ready to serve. */
export interface BoundMethod {
  readonly spec: MethodSpec;
  readonly handler: AnyHandler;
}

/** A service ready to serve: its descriptor and every method bound to a handler. */
export interface ServiceBinding {
  readonly desc: DescService;
  readonly methods: readonly BoundMethod[];
}

/**
 * Binds a generated service to its handlers and policies. The types make a
 * missing handler or policy a compile error; a missing one at run time (from
 * plain JS) is a TypeError at start-up, not a failing call later.
 */
export function defineService<S extends GenService<GenServiceMethods>>(
  desc: S,
  policy: ServicePolicy<S>,
  impl: ServiceImpl<S>,
): ServiceBinding {
  const service = desc as unknown as DescService;
  const policies = policy as Record<string, MethodPolicy>;
  const handlers = impl as Record<string, AnyHandler>;
  const methods = service.methods.map((m): BoundMethod => {
    const p = policies[m.localName];
    const handler = handlers[m.localName];
    if (p === undefined || typeof handler !== "function") {
      throw new TypeError(`${service.typeName}.${m.name}: missing policy or handler`);
    }
    return {
      spec: Object.freeze({
        service: service.typeName,
        name: m.name,
        path: `/${service.typeName}/${m.name}`,
        kind: m.methodKind,
        desc: m,
        permission: p.permission,
        mutating: p.mutating,
        access: p.access ?? "authenticated",
        validate: p.validate as ((request: unknown) => void) | undefined,
        resource: p.resource as ((request: unknown) => ResourceRef) | undefined,
        target: Object.freeze({
          kind: p.target?.kind ?? "any",
          id: p.target?.id as ((request: unknown) => unknown) | undefined,
          optional: p.target?.optional ?? false,
        }),
      }),
      handler,
    };
  });
  return Object.freeze({ desc: service, methods: Object.freeze(methods) });
}
