import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runsAsRoot } from "../../test/helpers/required-tools.js";
import { createManualClock, silentLogger } from "../core/index.js";
import { openAuditFiles } from "./audit-files.js";

describe("audit files", () => {
  it("refuses to write while a rotation can be neither finished nor undone, and finishes it once it can", async (t) => {
    if (!runsAsRoot(t, "for chattr +i")) return;
    const d = mkdtempSync(join(tmpdir(), "dv-audit-files-"));
    const path = join(d, "audit.log");
    let afterRename = () => {};
    const files = await openAuditFiles({
      path,
      copyPath: undefined,
      size: 0,
      maxBytes: 1,
      maxAgeMs: 86_400_000,
      clock: createManualClock(Date.UTC(2026, 11, 5)),
      log: silentLogger,
      afterRename: () => afterRename(),
    });
    await files.write(Buffer.from("one\n"), false);
    files.advance(4);
    // Between the rename and the open the directory turns immutable (a
    // read-only directory even for root): neither the next file nor the
    // way back can be made.
    t.after(() => execFileSync("chattr", ["-i", d]));
    afterRename = () => {
      afterRename = () => {};
      execFileSync("chattr", ["+i", d]);
    };
    await assert.rejects(files.rotateIfDue(), { code: "EPERM" });
    await assert.rejects(files.rotateIfDue(), { code: "EPERM" }, "refused until it can finish");
    execFileSync("chattr", ["-i", d]);
    await files.rotateIfDue();
    await files.write(Buffer.from("two\n"), false);
    await files.close();
    const rotated = readdirSync(d).filter((f) => f.startsWith("audit.log."));
    assert.deepEqual(rotated, ["audit.log.2026-12-05T00-00-00-000Z"]);
    assert.equal(readFileSync(join(d, rotated[0] as string), "utf8"), "one\n");
    assert.equal(
      readFileSync(path, "utf8"),
      "two\n",
      "the next record is in the file of that name",
    );
  });
});
