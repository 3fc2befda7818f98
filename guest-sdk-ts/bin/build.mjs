#!/usr/bin/env node
// projector-build-ts: turns a TypeScript (or JavaScript) projection into a
// WebAssembly component the Projector host deploys.
//
//   projector-build-ts src/projection.ts [-o dist/projection.wasm]
//
// The file's default export is the projection (`defineProjection({...})`).
// esbuild bundles it with the SDK and its dependencies into one ES module,
// then componentize-js compiles that module, with SpiderMonkey, into a
// component that imports nothing but the projection contract (stdio,
// randomness, clocks and HTTP are left out).

import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function usage(message) {
  if (message) console.error(`projector-build-ts: ${message}`);
  console.error('usage: projector-build-ts ENTRY.ts [-o OUT.wasm] [--wit projection.wit]');
  process.exit(2);
}

function parseArgs(argv) {
  const args = { entry: undefined, out: undefined, wit: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-o' || arg === '--out') args.out = argv[++i];
    else if (arg === '--wit') args.wit = argv[++i];
    else if (arg === '-h' || arg === '--help') usage();
    else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
    else if (args.entry === undefined) args.entry = arg;
    else usage(`one entry file only (got ${args.entry} and ${arg})`);
  }
  if (!args.entry) usage('no entry file');
  args.entry = resolve(args.entry);
  if (!existsSync(args.entry)) usage(`${args.entry} does not exist`);
  args.out = resolve(args.out ?? join('dist', `${basename(args.entry, extname(args.entry))}.wasm`));
  args.wit = resolve(args.wit ?? witFile());
  return args;
}

/** The contract: packed beside the SDK, or in the Projector checkout it lives in. */
function witFile() {
  for (const candidate of [join(sdk, 'wit', 'projection.wit'), join(sdk, '..', 'wit', 'projection.wit')]) {
    if (existsSync(candidate)) return candidate;
  }
  usage('cannot find projection.wit; pass --wit PATH');
}

/** A build tool, from the project first (its pinned version), else the SDK's own. */
async function tool(name) {
  for (const base of [process.cwd(), sdk]) {
    const entry = packageEntry(base, name);
    if (entry) return import(pathToFileURL(entry).href);
  }
  console.error(`projector-build-ts: cannot find ${name}; run npm install`);
  process.exit(1);
}

/**
 * The ES module entry of package `name` as installed for `base` (walking up
 * through node_modules folders as Node does). By hand, because some of these
 * packages export only `import` conditions, which `require.resolve` cannot see.
 */
function packageEntry(base, name) {
  for (let dir = resolve(base); ; dir = dirname(dir)) {
    const root = join(dir, 'node_modules', name);
    if (existsSync(join(root, 'package.json'))) {
      const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
      const exported = manifest.exports?.['.'] ?? manifest.exports;
      const entry = (typeof exported === 'string' ? exported : exported?.import?.default ?? exported?.import ?? exported?.default)
        ?? manifest.module ?? manifest.main ?? 'index.js';
      return join(root, typeof entry === 'string' ? entry : 'index.js');
    }
    if (dirname(dir) === dir) return undefined;
  }
}

const args = parseArgs(process.argv.slice(2));
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'projector-build-'));
try {
  const entry = join(work, 'entry.js');
  writeFileSync(
    entry,
    [
      `import projection from ${JSON.stringify(args.entry)};`,
      `import { exportProjection } from ${JSON.stringify(join(sdk, 'src', 'component.ts'))};`,
      'export const { describe, handleBatch } = exportProjection(projection);',
      '',
    ].join('\n'),
  );
  const bundle = join(work, 'bundle.js');
  const esbuild = await tool('esbuild');
  await esbuild.build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    mainFields: ['module', 'main'],
    external: ['projector:projection/*'],
    nodePaths: [join(process.cwd(), 'node_modules')],
    minify: true,
    logLevel: 'warning',
  });
  const { componentize } = await tool('@bytecodealliance/componentize-js');
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: args.wit,
    worldName: 'projection',
    disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
  });
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, component);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`built ${args.out} (${(component.length / 1048576).toFixed(1)} MiB, ${seconds} s)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
