// Drives the verification page as a person does, in Debian's chromium via playwright-core (no
// browser download: executablePath). Input, one JSON object on stdin:
//   {"url": "...", "chromium": "/usr/bin/chromium", "paste": "<text>" | null, "file": "<path>" | null,
//    "languages": ["en", "fr", "ar"]}
// Output, one JSON object: {"steps": [{"lang", "dir", "status", "verdict", "note"}, ...]}:
// after pasting and clicking Verify (or opening the file), then after each language button.
import { chromium } from "playwright-core";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk));
  process.stdin.on("end", () => resolve(text));
}));

const browser = await chromium.launch({
  executablePath: input.chromium,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(input.url);
  if (input.paste !== null) {
    await page.fill("#document", input.paste);
    await page.click("#verify");
  } else {
    await page.setInputFiles("#file", input.file);
  }
  await page.waitForSelector("#verdict");
  const read = async () => ({
    lang: await page.getAttribute("html", "lang"),
    dir: await page.getAttribute("html", "dir"),
    status: await page.getAttribute("#result", "data-status"),
    verdict: await page.textContent("#verdict"),
    note: await page.textContent("#status-note"),
  });
  const steps = [await read()];
  for (const lang of input.languages) {
    await page.click(`[data-lang="${lang}"]`);
    steps.push(await read());
  }
  process.stdout.write(JSON.stringify({ steps }) + "\n");
} finally {
  await browser.close();
}
