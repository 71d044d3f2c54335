import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { codeName } from "./code.js";
import { allReasons, REASONS } from "./reasons.js";
import { RpcError, toRpcError } from "./rpc-error.js";

const docs = readFileSync(new URL("../../../docs/errors.md", import.meta.url), "utf8");

/** Rows of the reasons table as cells without backticks: reason, code, message, when. */
const rows = docs
  .split("\n")
  .map((line) =>
    line
      .split("|")
      .slice(1, -1)
      .map((c) => c.trim().replace(/`/g, "")),
  )
  .filter(
    (cells) => cells.length === 4 && /^[A-Z_]+$/.test(cells[0] ?? "") && cells[0] !== "reason",
  );

describe("the error catalogue", () => {
  for (const reason of allReasons()) {
    it(`documents ${reason} in docs/errors.md with its code and message`, () => {
      const row = rows.find((r) => r[0] === reason);
      assert.ok(row, `docs/errors.md has no row for ${reason}`);
      assert.equal(row[1], codeName(REASONS[reason].code));
      assert.equal(row[2], REASONS[reason].message);
    });
  }

  it("documents no reason that does not exist", () => {
    assert.deepEqual(rows.map((r) => r[0]).sort(), [...allReasons()].sort());
  });
});

describe("toRpcError", () => {
  it("turns an unknown error into INTERNAL that keeps the cause but not its message", () => {
    const cause = new Error("ENOENT: /var/lib/debvisor/state.db");
    const err = toRpcError(cause);
    assert.equal(err.reason, "INTERNAL");
    assert.equal(err.cause, cause);
    assert.ok(!err.clientMessage.includes("ENOENT"));
  });

  it("passes an RpcError through unchanged", () => {
    const err = new RpcError("NODE_NOT_FOUND");
    assert.equal(toRpcError(err), err);
  });
});
