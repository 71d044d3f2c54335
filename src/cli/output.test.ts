import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import {
  createStyle,
  formatBytes,
  messageJson,
  renderColumns,
  renderTable,
  shortAge,
  terminalSafe,
} from "./output.js";

describe("shortAge", () => {
  for (const [ms, text] of [
    [12_000, "12s"],
    [119_000, "119s"],
    [180_000, "3m"],
    [2 * 3_600_000, "2h"],
    [4 * 86_400_000, "4d"],
    [-5, "0s"],
  ] as const)
    it(`shows ${ms} ms as ${text}`, () => assert.equal(shortAge(ms), text));
});

describe("formatBytes", () => {
  for (const [n, text] of [
    [512, "512 B"],
    [1536, "1.5 KiB"],
    [1.2 * 1024 ** 3, "1.2 GiB"],
    [137438953472n, "128 GiB"],
    [4 * 1024 ** 4, "4.0 TiB"],
  ] as const)
    it(`shows ${n} as ${text}`, () => assert.equal(formatBytes(n), text));
});

describe("createStyle", () => {
  it("colours only on a terminal with NO_COLOR unset or empty", () => {
    assert.equal(createStyle(true, {}).good("Ready"), "\x1b[32mReady\x1b[0m");
    assert.equal(createStyle(true, { NO_COLOR: "" }).bad("NotReady"), "\x1b[31mNotReady\x1b[0m");
    assert.equal(createStyle(true, { NO_COLOR: "1" }).good("Ready"), "Ready");
    assert.equal(createStyle(false, {}).good("Ready"), "Ready");
  });
});

describe("renderTable", () => {
  it("aligns columns by visible width, colour codes not counted", () => {
    const style = createStyle(true, {});
    const out = renderTable(
      ["ID", "STATUS", "AGE"],
      [
        ["a", style.good("Ready"), "3m"],
        ["longer-id", style.bad("NotReady"), "12s"],
      ],
    );
    const plain = out
      .split("\x1b[32m")
      .join("")
      .split("\x1b[31m")
      .join("")
      .split("\x1b[0m")
      .join("");
    assert.equal(
      plain,
      "ID          STATUS     AGE\na           Ready      3m\nlonger-id   NotReady   12s\n",
    );
  });

  it("shows wide columns only with -o wide", () => {
    const cols = [
      { header: "A", value: (r: string) => r },
      { header: "B", wide: true, value: (r: string) => r.toUpperCase() },
    ];
    assert.equal(renderColumns(cols, ["x"], false), "A\nx\n");
    assert.equal(renderColumns(cols, ["x"], true), "A   B\nx   X\n");
  });
});

describe("messageJson", () => {
  it("uses protobuf JSON names, keeps zero values and writes timestamps as RFC 3339", () => {
    const json = messageJson(
      NodeSummarySchema,
      create(NodeSummarySchema, {
        info: { id: { id: "node-01" } },
        lastHeartbeat: { seconds: 1_700_000_000n, nanos: 500_000_000 },
        health: { timestamp: { seconds: 1_700_000_000n } },
      }),
    ) as Record<string, Record<string, unknown>>;
    assert.equal(json.lastHeartbeat, "2023-11-14T22:13:20.500Z");
    assert.equal(json.health?.timestamp, "2023-11-14T22:13:20Z");
    assert.equal(json.heartbeatAgeMs, "0", "zero values are present");
    assert.equal(json.readiness, "NODE_READINESS_UNSPECIFIED", "enums by name");
    assert.equal(json.cordoned, false);
  });
});

describe("terminalSafe", () => {
  const cases: [string, string, Parameters<typeof terminalSafe>[1], string][] = [
    ["ok-plain-text-unchanged", "node-01 café", {}, "node-01 café"],
    ["fail-escape-sequence", "a\x1b[2Jb", {}, "a\\x1b[2Jb"],
    ["fail-osc-title-and-bell", "\x1b]0;x\x07", {}, "\\x1b]0;x\\x07"],
    ["fail-carriage-return-and-newline-in-a-cell", "a\r\nb", {}, "a\\x0d\\x0ab"],
    ["ok-newlines-kept-for-whole-output", "a\nb\t", { keepLines: true }, "a\nb\t"],
    ["fail-c1-csi", "a\u009b2Jb", {}, "a\\x9b2Jb"],
    ["fail-bidi-override", "abc\u202edef\u2066", {}, "abc\\u{202e}def\\u{2066}"],
    ["ok-own-colours-kept", "\x1b[32mok\x1b[0m", { keepColours: true }, "\x1b[32mok\x1b[0m"],
    [
      "fail-other-sgr-escaped-even-with-colours",
      "\x1b[8mhidden",
      { keepColours: true },
      "\\x1b[8mhidden",
    ],
  ];
  for (const [name, input, options, expected] of cases)
    it(name, () => assert.equal(terminalSafe(input, options), expected));

  it("escapes table cells, so a name cannot add a row", () => {
    const out = renderTable(["NAME"], [["a\nfake"]]);
    assert.equal(out, "NAME\na\\x0afake\n");
  });
});
