#!/usr/bin/env node
// Prints the failed tests of every TRX file under the given folder (name, message, first stack lines), so that a
// failing run ends with what failed rather than with the last test's log output.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const root = process.argv[2] ?? "TestResults";
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) { if (name !== "bin" && name !== "obj") walk(path); }
    else if (name.endsWith(".trx")) files.push(path);
  }
};
try { walk(root); } catch { /* no results: nothing to report */ }

const decode = (s) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
let failed = 0;
for (const file of files) {
  const trx = readFileSync(file, "utf8");
  for (const [, attributes, body] of trx.matchAll(/<UnitTestResult\b([^>]*)>([\s\S]*?)<\/UnitTestResult>/g)) {
    if (!/outcome="Failed"/.test(attributes)) continue;
    failed++;
    const name = decode(/testName="([^"]*)"/.exec(attributes)?.[1] ?? "?");
    const message = decode(/<Message>([\s\S]*?)<\/Message>/.exec(body)?.[1] ?? "").trim();
    const stack = decode(/<StackTrace>([\s\S]*?)<\/StackTrace>/.exec(body)?.[1] ?? "").trim().split("\n").slice(0, 6).join("\n");
    console.log(`\nFAILED ${name}\n${message}\n${stack}`);
  }
}
console.log(`\n${failed} failed test(s) in ${files.length} result file(s) under ${root}`);
