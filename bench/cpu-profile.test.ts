import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hotFunctions } from "./cpu-profile.js";

const frame = (functionName: string, url: string, lineNumber: number) => ({
  functionName,
  url,
  lineNumber,
});

describe("hot functions of a CPU profile", () => {
  it("adds up a function's self samples over its call paths and ranks by share of busy time", () => {
    const top = hotFunctions(
      {
        nodes: [
          { id: 1, callFrame: frame("(root)", "", -1), hitCount: 0 },
          {
            id: 2,
            callFrame: frame("get", "file:///work/x/dist/src/store/sqlite-store.js", 195),
            hitCount: 30,
          },
          {
            id: 3,
            callFrame: frame(
              "",
              "file:///work/x/node_modules/@bufbuild/protobuf/dist/esm/to-binary.js",
              9,
            ),
            hitCount: 10,
          },
          { id: 6, callFrame: frame("(idle)", "", -1), hitCount: 900 },
          {
            id: 4,
            callFrame: frame("get", "file:///work/x/dist/src/store/sqlite-store.js", 195),
            hitCount: 20,
          },
          { id: 5, callFrame: frame("(garbage collector)", "", -1), hitCount: 40 },
        ],
      },
      3,
    );
    assert.deepEqual(top, [
      { name: "get", where: "dist/src/store/sqlite-store.js:196", selfPercent: 50 },
      { name: "(garbage collector)", where: "", selfPercent: 40 },
      {
        name: "(anonymous)",
        where: "node_modules/@bufbuild/protobuf/dist/esm/to-binary.js:10",
        selfPercent: 10,
      },
    ]);
  });
});
