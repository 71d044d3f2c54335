import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Node cannot bind unix datagram sockets; python3 (on every Debian) stands in
// for systemd's end of NOTIFY_SOCKET and prints each message as a JSON line.
const LISTENER = `
import array, json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("listening"), flush=True)
s.settimeout(float(sys.argv[2]))
while True:
    try:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(64))
    except socket.timeout:
        break
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
    print(json.dumps(data.decode()), flush=True)
`;

/** A fake systemd notify socket that records what the daemon sends. */
export interface NotifySocket {
  readonly path: string;
  readonly messages: string[];
  /** Resolves when a message containing `text` has arrived (rejects after `timeoutMs`). */
  waitFor(text: string, timeoutMs?: number): Promise<string>;
  close(): void;
}

/** Starts the listener; it stops by itself after `idleSeconds` without messages. */
export function startNotifySocket(idleSeconds = 120): Promise<NotifySocket> {
  const dir = mkdtempSync(join(tmpdir(), "dv-notify-"));
  const script = join(dir, "listen.py");
  writeFileSync(script, LISTENER);
  const path = join(dir, "notify.sock");
  const proc: ChildProcess = spawn("python3", [script, path, String(idleSeconds)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const messages: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = "";
  return new Promise((resolve, reject) => {
    proc.once("error", reject);
    proc.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as string;
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
        if (msg === "listening") {
          resolve({
            path,
            messages,
            waitFor(text, timeoutMs = 10_000) {
              return new Promise((res, rej) => {
                const check = () => messages.find((m) => m.includes(text));
                const found = check();
                if (found !== undefined) return res(found);
                const timer = setTimeout(
                  () =>
                    rej(
                      new Error(
                        `no "${text}" on the notify socket; got ${JSON.stringify(messages)}`,
                      ),
                    ),
                  timeoutMs,
                );
                waiters.push(() => {
                  const m = check();
                  if (m !== undefined) {
                    clearTimeout(timer);
                    res(m);
                  }
                });
              });
            },
            close: () => proc.kill(),
          });
          continue;
        }
        messages.push(msg);
        for (const w of [...waiters]) w();
      }
    });
  });
}
