// A node's key and certificate are replaced together when it renews (and
// so are the daemon's own when it renews its server certificate). They
// were written one after the other (each to a temporary name, then renamed),
// so a crash between the two renames left the new key beside the old
// certificate: the agent could not start, nor renew, and the node had to be
// enrolled again with a new token. Found by an adversarial review of the
// pki. The crash is made here by failing the write at that point; what is
// on disk is what a crash there leaves.
import assert from "node:assert/strict";
import { createPublicKey, X509Certificate } from "node:crypto";
import fs, { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { enrolledNodeId } from "../src/agent/index.js";
import { agentFiles, finishAgentFiles, writeFileSet } from "../src/client/index.js";
import { type CertifiedKey, loadCertificateAuthority } from "../src/pki/index.js";
import { readTlsMaterial } from "../src/server/index.js";
import { createTestPki } from "./helpers/pki.js";

/** Whether the key file holds the private key of the certificate file's public key. */
function matches(keyPath: string, certPath: string): boolean {
  const pub = createPublicKey(readFileSync(keyPath, "utf8")).export({
    format: "der",
    type: "spki",
  });
  const cert = new X509Certificate(readFileSync(certPath, "utf8"));
  return Buffer.compare(pub, cert.publicKey.export({ format: "der", type: "spki" })) === 0;
}

/** Runs `write` with renames into `failing` throwing, as if the process died at that rename. */
async function crashingAt(failing: string, write: () => Promise<void>): Promise<void> {
  const real = fs.renameSync;
  fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    if (resolve(String(to)) === resolve(failing)) throw new Error("crashed");
    real(from, to);
  };
  syncBuiltinESMExports();
  try {
    await assert.rejects(write, /crashed/);
  } finally {
    fs.renameSync = real;
    syncBuiltinESMExports();
  }
}

describe("a node's key and certificate across a crash", () => {
  let dir: string;
  let old: CertifiedKey;
  let renewed: CertifiedKey;
  let servers: CertifiedKey[];
  let caPem: string;
  before(async () => {
    const pki = await createTestPki();
    const ca = await loadCertificateAuthority(pki.ca);
    old = await ca.issue({ commonName: "node-07", usage: "client" });
    renewed = await ca.issue({ commonName: "node-07", usage: "client" });
    servers = await Promise.all(
      [1, 2].map(() =>
        ca.issue({ commonName: "localhost", usage: "server", altNames: ["localhost"] }),
      ),
    );
    caPem = pki.ca.certPem;
    dir = mkdtempSync(join(tmpdir(), "dv-agent-files-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const set = (k: CertifiedKey) => {
    const files = agentFiles(dir);
    return [
      { path: files.key, text: k.keyPem, mode: 0o600 },
      { path: files.cert, text: k.certPem, mode: 0o644 },
      { path: files.ca, text: caPem, mode: 0o644 },
    ];
  };

  it("a renewal that stops between moving in the key and the certificate is completed at the next start", async () => {
    const files = agentFiles(dir);
    await writeFileSet(set(old));
    await crashingAt(files.cert, () => writeFileSet(set(renewed).slice(0, 2)));
    // The agent's start: the identity it reads is whole, and it is the renewed one.
    assert.equal(enrolledNodeId(files), "node-07");
    assert.ok(matches(files.key, files.cert), "the key is the certificate's");
    assert.equal(readFileSync(files.cert, "utf8"), renewed.certPem);
    assert.equal((fs.statSync(files.key).mode & 0o777).toString(8), "600");
  });

  it("a renewal that stops before its files are all written leaves the old identity whole", async () => {
    const files = agentFiles(dir);
    await writeFileSet(set(old));
    // Dies before the commit point: the marker naming the set is never moved in.
    await crashingAt(`${files.key}.set`, () => writeFileSet(set(renewed).slice(0, 2)));
    assert.equal(enrolledNodeId(files), "node-07");
    assert.equal(readFileSync(files.cert, "utf8"), old.certPem);
    assert.ok(matches(files.key, files.cert), "the key is the certificate's");
    // The next renewal goes through.
    await writeFileSet(set(renewed).slice(0, 2));
    assert.equal(readFileSync(files.cert, "utf8"), renewed.certPem);
    assert.ok(matches(files.key, files.cert));
  });

  it("the daemon's own renewal stopped half-way is completed when it reads its TLS files", async () => {
    const paths = {
      key: join(dir, "server.key"),
      cert: join(dir, "server.crt"),
      clientCa: join(dir, "ca.crt"),
    };
    const pair = (k: CertifiedKey) => [
      { path: paths.key, text: k.keyPem, mode: 0o600 },
      { path: paths.cert, text: k.certPem, mode: 0o644 },
    ];
    await writeFileSet(pair(servers[0] as CertifiedKey));
    await crashingAt(paths.cert, () => writeFileSet(pair(servers[1] as CertifiedKey)));
    const tls = readTlsMaterial(paths);
    assert.equal(tls.certPem, (servers[1] as CertifiedKey).certPem);
    assert.ok(matches(paths.key, paths.cert), "the key is the certificate's");
  });

  it("a set written under relative paths is completed by a reader in another directory", async () => {
    // `hvctl cert issue --out ./tls` names its files relative to where it runs; the daemon (or
    // hvctl, through a context) reads them by their absolute path from wherever it runs.
    const sub = join(dir, "rel");
    fs.mkdirSync(sub);
    const abs = { key: join(sub, "server.key"), cert: join(sub, "server.crt") };
    const pair = (k: CertifiedKey) => [
      { path: join("rel", "server.key"), text: k.keyPem, mode: 0o600 },
      { path: join("rel", "server.crt"), text: k.certPem, mode: 0o644 },
    ];
    const cwd = process.cwd();
    try {
      process.chdir(dir);
      await writeFileSet(pair(servers[0] as CertifiedKey));
      await crashingAt(join("rel", "server.crt"), () =>
        writeFileSet(pair(servers[1] as CertifiedKey)),
      );
    } finally {
      process.chdir(cwd);
    }
    const tls = readTlsMaterial({ ...abs, clientCa: join(dir, "ca.crt") });
    assert.equal(tls.certPem, (servers[1] as CertifiedKey).certPem);
    assert.ok(matches(abs.key, abs.cert), "the key is the certificate's");
  });

  it("a reader completing the set while its writer moves it in fails neither", async () => {
    // Another process (hvctl loading its context, the agent's status) reads the files just
    // as the renewal moves them in: both complete the same set.
    const files = agentFiles(dir);
    await writeFileSet(set(old));
    const real = fs.renameSync;
    let raced = false;
    fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
      if (!raced && String(to) === files.key) {
        raced = true;
        fs.renameSync = real;
        syncBuiltinESMExports();
        finishAgentFiles(files);
      }
      real(from, to);
    };
    syncBuiltinESMExports();
    try {
      await writeFileSet(set(renewed).slice(0, 2));
    } finally {
      fs.renameSync = real;
      syncBuiltinESMExports();
    }
    assert.ok(raced);
    assert.equal(readFileSync(files.cert, "utf8"), renewed.certPem);
    assert.ok(matches(files.key, files.cert), "the key is the certificate's");
  });

  it("never writes a key through a link planted where its new copy is made", async () => {
    const files = agentFiles(dir);
    const victim = join(dir, "victim");
    fs.writeFileSync(victim, "untouched");
    fs.rmSync(`${files.key}.next`, { force: true });
    fs.symlinkSync(victim, `${files.key}.next`);
    await writeFileSet(set(renewed).slice(0, 2));
    assert.equal(readFileSync(victim, "utf8"), "untouched");
    assert.equal(readFileSync(files.key, "utf8"), renewed.keyPem);
    assert.ok(!fs.lstatSync(files.key).isSymbolicLink());
  });
});
