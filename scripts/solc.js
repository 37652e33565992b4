#!/usr/bin/env node
// `solc` command over solc-js (npm `solc`): no native solc binary is installable offline.
// forge, slither and the Python build call this file as their compiler. Modes:
//   solc --version
//   solc --standard-json [--base-path D] [--include-path D]... [--allow-paths ...]   (stdin -> stdout)
//   solc FILE.sol... --combined-json KEYS [--optimize] [remap=target]...             (slither)
// Imports resolve against the working directory, --base-path, every --include-path and
// node_modules beside this script. Output is written without process.exit(), so a large
// JSON is never truncated on a pipe.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const argv = process.argv.slice(2);
const roots = [process.cwd(), path.join(__dirname, '..', 'node_modules')];
const valueFlags = new Set(['--base-path', '--include-path', '--allow-paths', '--evm-version',
  '--combined-json', '--optimize-runs', '--output-dir']);
const opts = { files: [], remaps: [], optimize: false, combined: null, runs: 200, evm: null };

for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (valueFlags.has(a)) {
    const v = argv[++i];
    if (a === '--base-path' || a === '--include-path') roots.push(path.resolve(v));
    if (a === '--combined-json') opts.combined = v;
    if (a === '--optimize-runs') opts.runs = Number(v);
    if (a === '--evm-version') opts.evm = v;
  } else if (a === '--optimize') opts.optimize = true;
  else if (a.startsWith('--')) continue;
  else if (a.includes('=')) opts.remaps.push(a);
  else opts.files.push(a);
}

function findImports(p) {
  for (const root of roots) {
    const f = path.resolve(root, p);
    if (fs.existsSync(f)) return { contents: fs.readFileSync(f, 'utf8') };
  }
  return { error: 'File not found: ' + p };
}

if (argv.includes('--version')) {
  process.stdout.write('solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
} else if (argv.includes('--standard-json')) {
  const input = fs.readFileSync(0, 'utf8');
  process.stdout.write(solc.compile(input, { import: findImports }));
} else if (opts.combined !== null) {
  const sources = {};
  for (const f of opts.files) sources[f] = { content: fs.readFileSync(f, 'utf8') };
  const settings = {
    remappings: opts.remaps,
    optimizer: { enabled: opts.optimize, runs: opts.runs },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode', 'evm.deployedBytecode',
      'evm.methodIdentifiers', 'userdoc', 'devdoc'], '': ['ast'] } },
  };
  if (opts.evm) settings.evmVersion = opts.evm;
  const out = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings }),
    { import: findImports }));
  let failed = false;
  for (const e of out.errors || []) {
    process.stderr.write((e.formattedMessage || e.message) + '\n');
    if (e.severity === 'error') failed = true;
  }
  if (failed) {
    process.exitCode = 1;
  } else {
    const combined = { contracts: {}, sources: {}, version: solc.version() };
    for (const [file, contracts] of Object.entries(out.contracts || {})) {
      for (const [name, c] of Object.entries(contracts)) {
        combined.contracts[file + ':' + name] = {
          abi: c.abi, bin: c.evm.bytecode.object, 'bin-runtime': c.evm.deployedBytecode.object,
          srcmap: c.evm.bytecode.sourceMap, 'srcmap-runtime': c.evm.deployedBytecode.sourceMap,
          userdoc: c.userdoc, devdoc: c.devdoc, hashes: c.evm.methodIdentifiers,
        };
      }
    }
    for (const [file, s] of Object.entries(out.sources || {})) combined.sources[file] = { AST: s.ast, id: s.id };
    process.stdout.write(JSON.stringify(combined));
  }
} else {
  process.stderr.write('usage: solc --version | --standard-json | FILE... --combined-json KEYS\n');
  process.exitCode = 2;
}
