/**
 * The one normalisation of node ids: ids are unique without regard to case
 * (the upstream contract's hostnames and UUIDs come in any case), so
 * `Node01` and `node01` name one node. Stores key nodes by it, and every
 * comparison of two node ids goes through {@link sameNode}.
 */
export const nodeKey = (id: string): string => id.toLowerCase();

/** Whether two node ids name the same node (equal strings without lowering either: it runs per VM per heartbeat). */
export const sameNode = (a: string, b: string): boolean => a === b || nodeKey(a) === nodeKey(b);
