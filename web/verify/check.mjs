// The verdicts of core.js on documents given as JSON lines on stdin:
//   {"document": "<text as pasted or scanned>", "key": "<verifier key>", "today": "YYYY-MM-DD"}
// one JSON line out each: {"status", "code", "detail"}. tests/web compares them with the
// Python offline verifier's (clients/offline/certificate.py) on the same inputs.
import { createInterface } from "node:readline";
import { readInput, verifyDocument } from "./src/core.js";

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { document, key, today } = JSON.parse(line);
  let verdict;
  try {
    verdict = verifyDocument(readInput(document), key, today);
  } catch (error) {
    verdict = { status: "invalid", code: "malformed", detail: String(error.message) };
  }
  const { status, code = "", detail = "" } = verdict;
  const fields = verdict.document ? verdict.document.fields : null;
  process.stdout.write(JSON.stringify({ status, code, detail, fields }) + "\n");
}
