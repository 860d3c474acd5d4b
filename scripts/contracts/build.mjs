#!/usr/bin/env node
// Compiles crates/ledger/contracts/*.sol with the pinned solc-js (no network:
// imports are read from node_modules) and writes one JSON artifact per
// contract to crates/ledger/artifacts/. The artifacts are committed so that
// `cargo build` never needs a compiler; `--check` recompiles and fails when
// the committed files differ, which is how CI proves they match the sources.
//
//   node scripts/contracts/build.mjs [--check]
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const solc = require("solc");
const ledger = path.resolve(here, "../../crates/ledger");
const srcDir = path.join(ledger, "contracts");
const outDir = path.join(ledger, "artifacts");
const check = process.argv.includes("--check");

// One EVM target for every contract: OpenZeppelin 5.x needs MCOPY (Cancun),
// and the embedded chain runs Cancun rules.
const EVM_VERSION = "cancun";
const settings = {
  evmVersion: EVM_VERSION,
  optimizer: { enabled: true, runs: 200 },
  outputSelection: {},
};

const sources = {};
for (const file of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  const unit = `contracts/${file}`;
  sources[unit] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
  settings.outputSelection[unit] = { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] };
}

// Imports resolve only inside the pinned node_modules, never the network.
function findImport(p) {
  try {
    return { contents: fs.readFileSync(require.resolve(p, { paths: [here] }), "utf8") };
  } catch (e) {
    return { error: `cannot resolve ${p}: ${e.message}` };
  }
}

const output = JSON.parse(
  solc.compile(JSON.stringify({ language: "Solidity", sources, settings }), { import: findImport }),
);
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const ozVersion = JSON.parse(
  fs.readFileSync(require.resolve("@openzeppelin/contracts/package.json", { paths: [here] }), "utf8"),
).version;

// Only contracts declared in our own files become artifacts; OpenZeppelin
// bases are compiled in but not emitted separately.
const wanted = {};
for (const [unit, contracts] of Object.entries(output.contracts ?? {})) {
  if (!(unit in sources)) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (c.evm.bytecode.object.length === 0) continue; // abstract contracts and interfaces
    wanted[`${name}.json`] = `${JSON.stringify(
      {
        contractName: name,
        sourceName: unit,
        compiler: { solc: solc.version(), openzeppelin: ozVersion, evmVersion: EVM_VERSION, optimizerRuns: 200 },
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      },
      null,
      2,
    )}\n`;
  }
}

if (check) {
  const present = fs.existsSync(outDir) ? fs.readdirSync(outDir).filter((f) => f.endsWith(".json")) : [];
  const problems = [];
  for (const [file, text] of Object.entries(wanted)) {
    const p = path.join(outDir, file);
    if (!fs.existsSync(p)) problems.push(`missing ${file}`);
    else if (fs.readFileSync(p, "utf8") !== text) problems.push(`stale ${file}`);
  }
  for (const file of present) if (!(file in wanted)) problems.push(`unexpected ${file}`);
  if (problems.length > 0) {
    console.error(`artifacts do not match contracts (run node scripts/contracts/build.mjs):\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`artifacts match sources (${Object.keys(wanted).length} contracts, solc ${solc.version()})`);
} else {
  fs.mkdirSync(outDir, { recursive: true });
  for (const file of fs.readdirSync(outDir)) if (file.endsWith(".json") && !(file in wanted)) fs.rmSync(path.join(outDir, file));
  for (const [file, text] of Object.entries(wanted)) {
    // Write via a temp file + rename so an interrupted build never leaves a torn artifact.
    const p = path.join(outDir, file);
    fs.writeFileSync(`${p}.tmp`, text);
    fs.renameSync(`${p}.tmp`, p);
  }
  console.log(`wrote ${Object.keys(wanted).length} artifacts to ${path.relative(process.cwd(), outDir)}`);
}
