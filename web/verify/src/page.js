// The verification page: reads a document (pasted, a file, the URL fragment, or a QR code where
// the browser has a BarcodeDetector), verifies it with core.js, and shows the verdict in the
// reader's language (en, fr, ar; the catalogue is built from web/verify/locales/*.po).

import { readInput, verifyDocument } from "./core.js";

const CATALOGUE = JSON.parse(document.getElementById("catalogue").textContent);
const LANGUAGES = ["en", "fr", "ar"];
const $ = (id) => document.getElementById(id);

let lang = "en";

/** The message `id` in the page's language, `%(name)s` replaced from `values`. */
function t(id, values = {}) {
  const text = (CATALOGUE[lang] && CATALOGUE[lang][id]) || id;
  return text.replace(/%\((\w+)\)s/g, (_, name) => String(values[name] ?? ""));
}

function today() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

function setLanguage(next) {
  lang = LANGUAGES.includes(next) ? next : "en";
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === "ar" ? "rtl" : "ltr";
  document.title = t("Check an insurance document");
  for (const node of document.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
  }
  if (lastInput !== null) show(lastInput);
}

const KINDS = {
  coverage: "Coverage certificate",
  card: "Insurance card",
  registration: "Registration certificate",
};
const REASONS = {
  "no-key": "No log key: enter the log's verifier key to check documents.",
  "bad-key": "The log key entered is not a valid verifier key.",
  malformed: "This is not a well-formed document of this log.",
  "not-signed": "This document is not signed by this log's key.",
  "bad-signature": "The signature does not match the document: it was altered.",
  "bad-proof": "The inclusion proof does not verify: the document was altered.",
  "bad-checkpoint": "The checkpoint does not match the document.",
  "bad-entry": "The log entry does not match the document.",
};

function row(table, label, value, { ltr = false } = {}) {
  const tr = table.insertRow();
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = t(label);
  tr.appendChild(th);
  const td = tr.insertCell();
  const bdi = document.createElement("bdi");
  bdi.textContent = value;
  if (ltr) bdi.dir = "ltr";
  td.appendChild(bdi);
  td.dataset.field = label;
}

function relationship(value) {
  return t(`relationship: ${value}`);
}

function cardNumber(digits) {
  return digits.replace(/(\d{4})(?=\d)/g, "$1 ");
}

let lastInput = null;

function show(input) {
  lastInput = input;
  const result = $("result");
  result.replaceChildren();
  let verdict;
  try {
    verdict = verifyDocument(readInput(input), $("key").value, today());
  } catch (error) {
    verdict = { status: "invalid", code: "malformed", detail: String(error && error.message) };
  }
  result.dataset.status = verdict.status;
  const heading = document.createElement("h2");
  heading.id = "verdict";
  result.appendChild(heading);
  const note = document.createElement("p");
  note.id = "status-note";
  if (verdict.status === "invalid") {
    heading.textContent = t("NOT VALID: do not accept this document");
    note.textContent = t(REASONS[verdict.code] || REASONS.malformed);
    result.appendChild(note);
    const detail = document.createElement("p");
    detail.id = "detail";
    detail.dir = "ltr";
    detail.className = "detail";
    detail.textContent = verdict.detail;
    result.appendChild(detail);
    return;
  }
  const doc = verdict.document;
  const f = doc.fields;
  heading.textContent =
    verdict.status === "expired" ? t("EXPIRED") : t("Valid as issued: check its status online");
  const kind = document.createElement("p");
  kind.id = "kind";
  kind.textContent = t(KINDS[doc.kind]);
  result.appendChild(kind);
  const table = document.createElement("table");
  table.id = "fields";
  result.appendChild(table);
  row(table, "Person", f.person, { ltr: true });
  if (f.card) row(table, "Card number", cardNumber(f.card), { ltr: true });
  row(table, "Insurer", f.insurer, { ltr: true });
  if (f.policy) row(table, "Policy", f.policy, { ltr: true });
  if (f.plan) row(table, "Plan", f.plan);
  if (f.relationship) row(table, "Relationship", relationship(f.relationship));
  if (f.period) row(table, "Covered from", f.period.start, { ltr: true });
  if (f.registered) row(table, "Registered since", f.registered, { ltr: true });
  if (f.date) row(table, "Stated for", f.date, { ltr: true });
  if (f.issued) row(table, "Issued", f.issued, { ltr: true });
  row(table, "Valid until", doc.validUntil, { ltr: true });
  row(table, "Issued at tree size", String(doc.treeSize), { ltr: true });
  row(table, "Signed by", verdict.key, { ltr: true });
  row(table, "Checked", verdict.checked.map((c) => t(c)).join(t(", ")));
  note.textContent =
    verdict.status === "expired"
      ? t("This document was valid until %(date)s and has expired. Ask for a current one.", {
          date: doc.validUntil,
        })
      : t(
          "This document proves what the log said at tree size %(size)s. A cancellation, refund, replacement or revocation logged later is not in it: check its status online before relying on it.",
          { size: String(doc.treeSize) },
        );
  result.appendChild(note);
}

function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("lang")) setLanguage(params.get("lang"));
  const doc = params.get("doc");
  if (doc) {
    // base64url of the document's bytes (a note or a bundle), as scanned
    const b64 = doc.replace(/-/g, "+").replace(/_/g, "/");
    let text;
    try {
      const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
      text = new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)));
    } catch {
      text = doc; // not base64url: shown, and refused, as it is
    }
    $("document").value = text;
    show(text);
  }
}

async function scanImage(source) {
  const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  const codes = await detector.detect(source);
  return codes.length ? codes[0].rawValue : null;
}

async function setUpScanning() {
  // Only where the browser decodes QR codes itself (BarcodeDetector: Chromium on Android,
  // macOS, ChromeOS); elsewhere the text is pasted or a file opened.
  if (!("BarcodeDetector" in window)) return;
  const formats = await window.BarcodeDetector.getSupportedFormats().catch(() => []);
  if (!formats.includes("qr_code")) return;
  $("scan").hidden = false;
  $("image").addEventListener("change", async () => {
    const file = $("image").files[0];
    if (!file) return;
    const value = await scanImage(await createImageBitmap(file));
    if (value !== null) {
      $("document").value = value;
      show(value);
    }
  });
  $("camera").addEventListener("click", async () => {
    const video = $("video");
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const tick = async () => {
      const value = await scanImage(video).catch(() => null);
      if (value !== null) {
        stream.getTracks().forEach((track) => track.stop());
        video.hidden = true;
        $("document").value = value;
        show(value);
      } else if (video.srcObject) {
        requestAnimationFrame(tick);
      }
    };
    tick();
  });
}

function start() {
  const meta = document.querySelector('meta[name="policy-ledger-log-key"]');
  $("key").value = meta ? meta.content : "";
  const preferred = (navigator.language || "en").slice(0, 2);
  setLanguage(LANGUAGES.includes(preferred) ? preferred : "en");
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang));
  }
  $("verify").addEventListener("click", () => show($("document").value));
  $("file").addEventListener("change", async () => {
    const file = $("file").files[0];
    if (file) {
      const text = await file.text();
      $("document").value = text;
      show(text);
    }
  });
  fromFragment();
  setUpScanning();
  window.addEventListener("hashchange", fromFragment);
}

start();
