import {
  create,
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";

/** Per-call options. */
export interface CallOptions {
  /** Milliseconds until the call is given up (default: none). */
  readonly timeoutMs?: number;
  readonly metadata?: grpc.Metadata;
  readonly signal?: AbortSignal;
}

type MethodFn<M> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
  : M extends {
        methodKind: "server_streaming";
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? (request: MessageInitShape<I>, options?: CallOptions) => AsyncIterable<MessageShape<O>>
    : never;

/** A promise-based client for one generated service. */
export type ServiceClient<S extends GenService<GenServiceMethods>> = {
  [K in keyof S["method"]]: MethodFn<S["method"][K]>;
};

/**
 * Creates a typed client over a grpc-js channel with the protobuf-es codec.
 * Unary methods return promises; server-streaming methods async iterables.
 * Errors are grpc-js ServiceErrors (code, details, metadata).
 */
export function createServiceClient<S extends GenService<GenServiceMethods>>(
  service: S,
  channel: grpc.Client,
): ServiceClient<S> {
  const desc = service as unknown as DescService;
  const out: Record<string, unknown> = {};
  for (const method of desc.methods) {
    const path = `/${desc.typeName}/${method.name}`;
    const serialize = (m: unknown) =>
      Buffer.from(toBinary(method.input, create(method.input, m as never)));
    const deserialize = (b: Buffer) => fromBinary(method.output, b);
    if (method.methodKind === "unary") {
      out[method.localName] = (request: unknown, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const call = channel.makeUnaryRequest(
            path,
            serialize,
            deserialize,
            request,
            options.metadata ?? new grpc.Metadata(),
            callOptions(options),
            (err, value) => (err ? reject(err) : resolve(value)),
          );
          options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
        });
    } else if (method.methodKind === "server_streaming") {
      out[method.localName] = (request: unknown, options: CallOptions = {}) => {
        const call = channel.makeServerStreamRequest(
          path,
          serialize,
          deserialize,
          request,
          options.metadata ?? new grpc.Metadata(),
          callOptions(options),
        );
        options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
        return call as AsyncIterable<unknown>;
      };
    }
  }
  return out as ServiceClient<S>;
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
}
