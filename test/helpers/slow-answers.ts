import assert from "node:assert/strict";
import { createConnection, createServer, type Server, type Socket } from "node:net";

/** A TCP proxy to `port` that holds every byte etcd sends back for `delayMs` (a number, or read at each chunk). */
export async function slowAnswers(
  port: number,
  delayMs: number | (() => number),
): Promise<{ port: number; server: Server }> {
  const delay = typeof delayMs === "number" ? () => delayMs : delayMs;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: "127.0.0.1", port });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    // Answers still held when the connection closes are dropped (the client is
    // gone): their timers are cleared too, not left to keep the process alive
    // for up to `delayMs` after a test closed its store.
    const held = new Set<NodeJS.Timeout>();
    upstream.on("data", (chunk: Buffer) => {
      const timer = setTimeout(() => {
        held.delete(timer);
        if (client.writable) client.write(chunk);
      }, delay());
      held.add(timer);
    });
    const close = () => {
      for (const timer of held) clearTimeout(timer);
      held.clear();
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
  });
  server.on("close", () => {
    for (const s of sockets) s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  return { port: address.port, server };
}
