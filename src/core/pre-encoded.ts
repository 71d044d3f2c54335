import type { DescMessage } from "@bufbuild/protobuf";

// A handler that already holds the protobuf encoding of its response (built
// from parts cached across calls) hands it to a binary transport here, so the
// transport does not encode the same message again. Other transports (JSON)
// never look and encode the message as always.

interface Attached {
  readonly typeName: string;
  readonly bytes: Uint8Array;
}

/** Keyed by the response object itself: a copy or a replacement carries nothing. */
const attached = new WeakMap<object, Attached>();

/**
 * Attaches `bytes`, the protobuf binary encoding of `message` as a `schema`
 * message, to that very object and returns the object. The bytes must decode
 * (fromBinary) to a message equal to `create(schema, message)`; fields may be
 * in any order on the wire. The object must not change afterwards. The bytes
 * belong to the object, not to the call: a stage that answers with another
 * object (even a spread copy) answers without them, and a transport encodes
 * that object instead.
 */
export function attachEncoding<T extends object>(
  message: T,
  schema: DescMessage,
  bytes: Uint8Array,
): T {
  attached.set(message, { typeName: schema.typeName, bytes });
  return message;
}

/**
 * The bytes attached to `message` by {@link attachEncoding} for `schema`, or
 * undefined: nothing attached, or attached for another message type.
 */
export function preEncoded(message: unknown, schema: DescMessage): Uint8Array | undefined {
  if (typeof message !== "object" || message === null) return undefined;
  const found = attached.get(message);
  return found !== undefined && found.typeName === schema.typeName ? found.bytes : undefined;
}
