// Verification of the signed documents of docs/formats.md ("Signed documents and their QR
// payload"), in the browser: the C2SP signed note's Ed25519 signature by the log key, the
// statement (parsed strictly, line by line), the RFC 9162 inclusion proof, and, when a bundle
// carries them, the checkpoint and the entry. The same checks, in the same order, as the Python
// offline verifier (clients/offline/certificate.py); tests/web compares their verdicts.
// No DOM here: page.js shows what verifyDocument returns; node runs this module in the tests.

import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";

ed.hashes.sha512 = sha512;

export const NOTE_BYTES_MAX = 16 * 1024;
const NOTE_SIGNATURES_MAX = 32;
const PROOF_LINES_MAX = 63;
const TREE_SIZE_MAX = 2n ** 63n - 1n;
const SIGNATURE_PREFIX = "\u2014 ";
export const BUNDLE_FORMAT = "policy-ledger coverage certificate bundle v1";

const DECIMAL = /^(0|[1-9][0-9]{0,18})$/;
const DATE = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;
const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/;
const PERSON_TOKEN = /^pt_[a-z2-7]{26}$/;
const PERSON =
  /^([A-Z]{2}):(RESIDENCE_ID|NATIONAL_ID|CIVIL_ID|PASSPORT|BORDER_NUMBER):([A-Z0-9]{1,32})$/;
const CARD_NUMBER = /^[0-9]{16}$/;
const RELATIONSHIPS = ["self", "spouse", "child", "parent", "domestic_worker", "other"];
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x09\x0b-\x1f]/;

/** A check that failed: `code` names it for the reader (page.js translates it), `detail` says
 * exactly what, in English (as the Python verifier's messages do). */
export class VerifyError extends Error {
  constructor(code, detail) {
    super(detail);
    this.code = code;
  }
}

const fail = (code, detail) => {
  throw new VerifyError(code, detail);
};
const malformed = (detail) => fail("malformed", `malformed certificate: ${detail}`);

// ---- bytes ---------------------------------------------------------------------------------

const encoder = new TextEncoder();

export function b64decode(text, what) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    fail("malformed", `malformed ${what}: not standard base64`);
  }
  const binary = atob(text);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64encode(bytes) !== text) fail("malformed", `malformed ${what}: not canonical base64`);
  return bytes;
}

export function b64encode(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const equal = (a, b) => a.length === b.length && a.every((value, i) => value === b[i]);
const contains = (haystack, needle) => {
  for (let at = 0; at + needle.length <= haystack.length; at++) {
    if (needle.every((value, i) => haystack[at + i] === value)) return true;
  }
  return false;
};
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
};

// ---- keys and notes (https://c2sp.org/signed-note) -----------------------------------------

function keyNameProblem(name) {
  if (!name) return "is empty";
  if (name.includes("+")) return "contains '+'";
  if (/\s/u.test(name)) return "contains whitespace";
  return "";
}

/** A C2SP Ed25519 verifier key `<name>+<hex8 key id>+<base64(0x01 || key)>`; its id checked. */
export function parseLogKey(text) {
  const bad = (problem) => fail("bad-key", `malformed log key: ${problem}`);
  const trimmed = text.trim();
  const first = trimmed.indexOf("+");
  const second = first < 0 ? -1 : trimmed.indexOf("+", first + 1);
  if (second < 0) bad("want <name>+<hex key id>+<base64 key>");
  const name = trimmed.slice(0, first);
  const keyIdHex = trimmed.slice(first + 1, second);
  const encoded = trimmed.slice(second + 1);
  const problem = keyNameProblem(name);
  if (problem) bad(`key name ${JSON.stringify(name.slice(0, 64))} ${problem}`);
  if (!/^[0-9a-f]{8}$/.test(keyIdHex)) bad("key id must be 8 hex digits (lowercase)");
  let material;
  try {
    material = b64decode(encoded, "key");
  } catch {
    bad("key is not standard padded base64");
  }
  if (material.length === 0 || material[0] !== 0x01) {
    bad("a log key is of signature type 0x01 (Ed25519)");
  }
  if (material.length !== 33) bad(`Ed25519 public key must be 32 bytes, got ${material.length - 1}`);
  const keyId = sha256(concat(encoder.encode(name + "\n"), material)).slice(0, 4);
  if (hex(keyId) !== keyIdHex) {
    bad(`key id ${keyIdHex} does not match the key (computed ${hex(keyId)})`);
  }
  return { name, keyId, publicKey: material.slice(1), label: `${name}+${keyIdHex}` };
}

/** The text of the note in `bytes` once `key`'s signature on it verifies. */
export function openNote(bytes, key, what) {
  const bad = (problem) => fail("malformed", `malformed ${what}: ${problem}`);
  if (bytes.length > NOTE_BYTES_MAX) bad(`${bytes.length} bytes, over ${NOTE_BYTES_MAX}`);
  let note;
  try {
    note = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    bad("not valid UTF-8");
  }
  const control = CONTROL.exec(note);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
    bad(`control character U+${code} at ${control.index}`);
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0) bad("no blank line between the text and the signatures");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block) bad("no signature lines after the blank line");
  if (!block.endsWith("\n")) bad("signature block does not end in a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > NOTE_SIGNATURES_MAX) bad(`${lines.length} signature lines`);
  const textBytes = encoder.encode(text);
  let verified = false;
  const signers = [];
  lines.forEach((line, i) => {
    const number = i + 1;
    if (!line.startsWith(SIGNATURE_PREFIX)) {
      bad(`signature line ${number} does not start with an em dash and a space`);
    }
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = space < 0 ? rest : rest.slice(0, space);
    const encoded = space < 0 ? "" : rest.slice(space + 1);
    if (!encoded) bad(`signature line ${number} has no signature after the key name`);
    if (keyNameProblem(name)) bad(`signature line ${number} key name ${keyNameProblem(name)}`);
    let decoded;
    try {
      decoded = b64decode(encoded, "signature");
    } catch {
      bad(`signature line ${number} is not standard padded base64`);
    }
    if (decoded.length <= 4) bad(`signature line ${number} has no room for a key id and signature`);
    signers.push(`${name}+${hex(decoded.slice(0, 4))}`);
    if (name !== key.name || !equal(decoded.slice(0, 4), key.keyId)) return;
    const signature = decoded.slice(4);
    let ok = false;
    if (signature.length === 64) {
      try {
        ok = ed.verify(signature, textBytes, key.publicKey, { zip215: false });
      } catch {
        ok = false;
      }
    }
    if (!ok) fail("bad-signature", `${what}: signature by ${key.label} (a trusted key) does not verify`);
    verified = true;
  });
  if (!verified) {
    fail(
      "not-signed",
      `${what} is not signed by the log key ${key.label} (signed by ${signers.join(", ")})`,
    );
  }
  return text;
}

// ---- statements ----------------------------------------------------------------------------

const PROOF_BLOCK = ["leaf", "leaf-hash", "tree-size", "root"];

/** Each document's header and its lines before the proof block (docs/formats.md). */
export const DOCUMENTS = {
  "policy-ledger coverage certificate v2": {
    kind: "coverage",
    fields: ["person", "person-token", "date", "insurer", "policy", "plan", "period", "relationship"],
  },
  "policy-ledger coverage certificate v3": {
    kind: "coverage",
    fields: [
      "person", "person-token", "date", "insurer", "policy", "plan", "period", "relationship",
      "valid-until",
    ],
  },
  "policy-ledger insurance card v1": {
    kind: "card",
    fields: ["card", "person", "person-token", "insurer", "issued", "valid-until"],
  },
  "policy-ledger registration certificate v1": {
    kind: "registration",
    fields: [
      "person", "person-token", "insurer", "policy", "relationship", "registered", "issued",
      "valid-until",
    ],
  },
};

function value(line, number, field) {
  const space = line.indexOf(" ");
  const name = space < 0 ? line : line.slice(0, space);
  if (name !== field || space < 0) {
    malformed(`line ${number} must be '${field} <value>', got ${JSON.stringify(line.slice(0, 64))}`);
  }
  const rest = line.slice(space + 1);
  if (!rest) malformed(`line ${number} (${field}) has no value`);
  return rest;
}

function date(text, field) {
  const parsed = DATE.test(text) ? new Date(`${text}T00:00:00Z`) : null;
  if (!parsed || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== text) {
    malformed(`${field} ${JSON.stringify(text.slice(0, 32))} is not a YYYY-MM-DD date`);
  }
  return text; // YYYY-MM-DD strings compare as dates
}

function decimal(text, field) {
  if (!DECIMAL.test(text) || BigInt(text) > TREE_SIZE_MAX) {
    malformed(`${field} ${JSON.stringify(text.slice(0, 32))} is not a decimal in 0..2**63-1`);
  }
  return BigInt(text);
}

function hash(text, field) {
  const digest = b64decode(text, `certificate ${field}`);
  if (digest.length !== 32) malformed(`${field} is ${digest.length} bytes, SHA-256 hashes are 32`);
  return digest;
}

function identifier(text, field, max) {
  if (text.length > max || !IDENTIFIER.test(text)) malformed(`${field} is not an identifier`);
  return text;
}

const CHECKS = {
  person: (t) => (PERSON.test(t) ? t : malformed("person is not <COUNTRY>:<TYPE>:<VALUE>")),
  "person-token": (t) =>
    PERSON_TOKEN.test(t) ? t : malformed("person-token is not pt_ and 26 base32 characters"),
  card: (t) => (CARD_NUMBER.test(t) && luhn(t) ? t : malformed("card is not a 16-digit card number")),
  insurer: (t) => identifier(t, "insurer", 64),
  policy: (t) => identifier(t, "policy", 128),
  plan: (t) =>
    [...t].length <= 64 && !/[\p{C}\p{Z}]/u.test(t.replaceAll(" ", ""))
      ? t
      : malformed("plan is not printable text of at most 64 characters"),
  relationship: (t) => (RELATIONSHIPS.includes(t) ? t : malformed("relationship is not known")),
  date: (t) => date(t, "date"),
  issued: (t) => date(t, "issued"),
  registered: (t) => date(t, "registered"),
  "valid-until": (t) => date(t, "valid-until"),
  period: (t) => {
    const parts = t.split(" ");
    if (parts.length !== 2) malformed("period must be '<start> <end>'");
    const [start, end] = [date(parts[0], "period start"), date(parts[1], "period end")];
    if (end < start) malformed(`period ends (${end}) before it starts`);
    return { start, end };
  },
};

function luhn(digits) {
  let sum = 0;
  [...digits].reverse().forEach((c, i) => {
    let d = Number(c);
    if (i % 2 === 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  });
  return sum % 10 === 0;
}

/** Hashes in the inclusion proof of `index` in a tree of `size` (RFC 9162 2.1.3.1). */
function proofLength(index, size) {
  const inner = (index ^ (size - 1n)).toString(2).replace(/^0+/, "").length;
  const border = (index >> BigInt(inner)).toString(2).replaceAll("0", "").length;
  return inner + border;
}

/** The fields of a statement, parsed strictly (no signature, no proof checked). */
export function parseStatement(text) {
  if (!text.endsWith("\n")) malformed("statement does not end in a newline");
  const lines = text.slice(0, -1).split("\n");
  const documentType = DOCUMENTS[lines[0]];
  if (!documentType) malformed(`unknown first line ${JSON.stringify(lines[0].slice(0, 64))}`);
  const names = [...documentType.fields, ...PROOF_BLOCK];
  const fields = {};
  names.forEach((field, i) => {
    const number = i + 2;
    if (number > lines.length) malformed(`line ${number} (${field}) is missing`);
    const raw = value(lines[number - 1], number, field);
    fields[field] = CHECKS[field] ? CHECKS[field](raw) : raw;
  });
  const proofLines = lines.slice(names.length + 1);
  if (proofLines.length > PROOF_LINES_MAX) malformed(`${proofLines.length} proof lines`);
  const proof = proofLines.map((line, i) => hash(value(line, names.length + 2 + i, "proof"), "proof"));
  const leaf = decimal(fields.leaf, "leaf");
  const size = decimal(fields["tree-size"], "tree-size");
  if (leaf >= size) malformed(`leaf ${leaf} is not below tree-size ${size}`);
  const expected = proofLength(leaf, size);
  if (proof.length !== expected) {
    malformed(`${proof.length} proof lines, the proof of leaf ${leaf} in a tree of size ${size} has ${expected}`);
  }
  if (fields.period && fields.date) {
    if (fields.date < fields.period.start || fields.date > fields.period.end) {
      malformed(`date ${fields.date} is outside the period`);
    }
  }
  if (fields.period && fields["valid-until"] && fields["valid-until"] !== fields.period.end) {
    malformed("valid-until is not the period's last day");
  }
  const validUntil = fields["valid-until"] ?? fields.period.end;
  return {
    header: lines[0],
    kind: documentType.kind,
    fields,
    validUntil,
    leaf,
    leafHash: hash(fields["leaf-hash"], "leaf-hash"),
    treeSize: size,
    root: hash(fields.root, "root"),
    proof,
    text,
  };
}

// ---- Merkle tree (RFC 9162) ----------------------------------------------------------------

const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

/** RFC 9162 section 2.1.3.2: `proof` leads from `leaf` at `index` to `root`. */
export function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) fail("bad-proof", `leaf index ${index} is not below tree size ${size}`);
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) fail("bad-proof", "inclusion proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail("bad-proof", "inclusion proof is too short");
  if (!equal(r, root)) fail("bad-proof", "inclusion proof does not lead to the certificate's root");
}

// ---- checkpoints and bundles ---------------------------------------------------------------

function checkCheckpoint(bytes, key, statement) {
  const text = openNote(bytes, key, "checkpoint");
  const lines = text.endsWith("\n") ? text.slice(0, -1).split("\n") : [];
  if (lines.length < 3) fail("bad-checkpoint", "malformed checkpoint");
  const [origin, sizeLine, rootLine] = lines;
  if (origin !== key.name) {
    fail("bad-checkpoint", `checkpoint is of another log: origin ${JSON.stringify(origin.slice(0, 64))}`);
  }
  if (!/^(0|[1-9][0-9]*)$/.test(sizeLine) || BigInt(sizeLine) !== statement.treeSize) {
    fail("bad-checkpoint", `checkpoint tree size '${sizeLine.slice(0, 32)}' is not the certificate's ${statement.treeSize}`);
  }
  let root;
  try {
    root = b64decode(rootLine, "checkpoint root");
  } catch {
    fail("bad-checkpoint", "malformed checkpoint: root hash is not standard padded base64");
  }
  if (!equal(root, statement.root)) fail("bad-checkpoint", "checkpoint root hash is not the certificate's root");
}

/** What was pasted or scanned: a signed note (what the QR code holds) or a bundle file (JSON
 * from `policy-ledger certificate get`: the note, its checkpoint and its entry). */
export function readInput(text) {
  const trimmed = text.replace(/^\s+/, "");
  if (trimmed.startsWith("{")) {
    let document;
    try {
      document = JSON.parse(trimmed);
    } catch {
      fail("malformed", "not a certificate: neither a signed note nor a certificate bundle (JSON)");
    }
    if (document === null || typeof document !== "object" || document.format !== BUNDLE_FORMAT) {
      fail("malformed", `not a certificate bundle: its format must be '${BUNDLE_FORMAT}'`);
    }
    for (const name of ["certificate", "checkpoint", "entry"]) {
      if (name in document && typeof document[name] !== "string") {
        fail("malformed", `certificate bundle: ${name} must be a string`);
      }
    }
    if (typeof document.certificate !== "string") fail("malformed", "certificate bundle has no certificate");
    return {
      note: encoder.encode(document.certificate),
      checkpoint: document.checkpoint === undefined ? null : encoder.encode(document.checkpoint),
      entry: document.entry === undefined ? null : b64decode(document.entry, "bundle entry"),
    };
  }
  // Pasted text: line ends normalised to \n (a paste may carry \r\n); scanned bytes are exact.
  let note = text.replace(/\r\n/g, "\n");
  if (!note.endsWith("\n")) note += "\n";
  return { note: encoder.encode(note), checkpoint: null, entry: null };
}

/**
 * The verdict on `input` ({note, checkpoint, entry}) with the log key `keyText` on `today`
 * (YYYY-MM-DD, the verifier's own calendar date):
 *   {status: "valid" | "expired", document, checked: [...]}, or
 *   {status: "invalid", code, detail}.
 */
export function verifyDocument(input, keyText, today) {
  try {
    if (!keyText || !keyText.trim()) fail("no-key", "no log key: enter the log's verifier key");
    const key = parseLogKey(keyText);
    const text = openNote(input.note, key, "certificate");
    const document = parseStatement(text);
    verifyInclusion(document.leaf, document.treeSize, document.leafHash, document.proof, document.root);
    const checked = ["signature", "inclusion proof"];
    if (input.checkpoint) {
      checkCheckpoint(input.checkpoint, key, document);
      checked.push("checkpoint");
    }
    if (input.entry) {
      if (!equal(leafHash(input.entry), document.leafHash)) {
        fail("bad-entry", "entry does not match the certificate: SHA-256(0x00 || entry) differs");
      }
      const token = encoder.encode(document.fields["person-token"]);
      if (!contains(input.entry, token)) {
        fail("bad-entry", "the entry does not name the certificate's person token");
      }
      checked.push("entry");
    }
    const status = today > document.validUntil ? "expired" : "valid";
    return { status, document, checked, key: key.label };
  } catch (error) {
    if (error instanceof VerifyError) {
      return { status: "invalid", code: error.code, detail: error.message };
    }
    throw error;
  }
}
