import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodePageToken, MAX_PAGE_SIZE, paginate } from "./paging.js";
import { RpcError } from "./rpc-error.js";

const items = Array.from({ length: 25 }, (_, i) => `n-${String(i).padStart(2, "0")}`);
const key = (s: string) => s;

describe("paginate", () => {
  it("returns everything in one page when page_size is 0 (an old client's empty request)", () => {
    const page = paginate(items, key, 0, "");
    assert.deepEqual(page.items, items);
    assert.equal(page.nextPageToken, "");
  });

  it("walks every item exactly once through next_page_token", () => {
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = paginate(items, key, 10, token);
      seen.push(...page.items);
      token = page.nextPageToken;
      pages++;
    } while (token !== "" && pages < 10);
    assert.deepEqual(seen, items);
    assert.equal(pages, 3);
  });

  it("keeps its place when an item before the cursor is removed between pages", () => {
    const first = paginate(items, key, 10, "");
    const shrunk = items.filter((i) => i !== "n-03");
    const second = paginate(shrunk, key, 10, first.nextPageToken);
    assert.equal(second.items[0], "n-10");
  });

  it("caps a huge page_size at MAX_PAGE_SIZE", () => {
    const many = Array.from({ length: MAX_PAGE_SIZE + 5 }, (_, i) => String(i).padStart(5, "0"));
    const page = paginate(many, key, 1_000_000, "");
    assert.equal(page.items.length, MAX_PAGE_SIZE);
    assert.notEqual(page.nextPageToken, "");
  });

  for (const [name, token] of [
    ["fail-garbage", "!!not-base64!!"],
    ["fail-foreign-prefix", btoa("v9:n-01").replace(/=+$/, "")],
    ["fail-too-long", "A".repeat(600)],
  ] as const) {
    it(`rejects a page token it did not make (${name})`, () => {
      assert.throws(
        () => paginate(items, key, 10, token),
        (e: unknown) => e instanceof RpcError && e.reason === "PAGE_TOKEN_INVALID",
      );
    });
  }

  it("round-trips keys with non-ASCII characters", () => {
    const keys = ["a", "ä", "z"];
    const page = paginate(keys, key, 1, encodePageToken("a"));
    assert.deepEqual(page.items, ["ä"]);
  });
});
