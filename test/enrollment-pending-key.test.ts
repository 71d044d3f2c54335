import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { enroll } from "../src/client/index.js";
import { provisionerDaemonForSuite } from "./helpers/provisioner-daemon.js";

/**
 * The key and CSR an unfinished enrolment keeps (`enroll.pending`) are for
 * the retry of that token only: the server answers a spent token again only
 * for its key, so reusing them with any other token gains nothing, and
 * loses a lot when the directory was copied (a machine image made after a
 * failed enrolment): every machine made from it enrolled with one private
 * key. A pending file that does not parse makes a new key, not a crash on
 * every run.
 */
describe("an agent directory's pending enrolment", () => {
  const d = provisionerDaemonForSuite({
    pki: { enrollLimit: { ratePerSecond: 100, burst: 1000 } },
  });
  const dir = mkdtempSync(join(tmpdir(), "dv-enrol-pending-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const options = async (name: string, nodeDir: string) => {
    const t = await d.provisioner.pki.createEnrollmentToken({ nodeName: name });
    return {
      server: d.daemon.grpcAddress,
      token: t.token,
      caFingerprint: t.caFingerprint,
      dir: nodeDir,
    };
  };

  it("is not reused with another token: machines cloned from one directory get their own keys", async () => {
    const image = join(dir, "image");
    // A failed enrolment (a token that is no good) leaves its key pending in the directory.
    const bad = await options("node-870", image);
    const failed = await enroll({ ...bad, token: `dvt_${"0".repeat(16)}_${"a".repeat(43)}` }).then(
      () => "enrolled",
      (e: Error) => e.message,
    );
    assert.notEqual(failed, "enrolled");
    // Two machines made from that directory, each with its own token.
    cpSync(image, join(dir, "a"), { recursive: true });
    cpSync(image, join(dir, "b"), { recursive: true });
    await enroll(await options("node-871", join(dir, "a")));
    await enroll(await options("node-872", join(dir, "b")));
    const keyA = readFileSync(join(dir, "a", "node.key"), "utf8");
    const keyB = readFileSync(join(dir, "b", "node.key"), "utf8");
    assert.notEqual(keyA, keyB, "two nodes enrolled with one private key");
  });

  it("that does not parse is replaced by a new key, and the node is enrolled", async () => {
    const wrong: string[] = [];
    for (const [i, text] of ["", "{", "{}", "null", '{"csrPem":1}'].entries()) {
      const name = `node-88${i}`;
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true, mode: 0o700 });
      writeFileSync(join(nodeDir, "enroll.pending"), text, { mode: 0o600 });
      const r = await enroll(await options(name, nodeDir)).then(
        (x) => x.subject,
        (e: Error) => `${e.name}: ${e.message}`,
      );
      if (r !== name) wrong.push(`pending ${JSON.stringify(text)}: ${r}`);
    }
    assert.deepEqual(wrong, []);
  });
});
