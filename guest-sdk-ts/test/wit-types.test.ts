// The SDK's view of the contract is generated from wit/projection.wit by
// jco: regenerating it must give the files checked in (`npm run wit-types`).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const sdk = join(import.meta.dirname, '..');

function files(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? files(dir, join(prefix, entry.name)) : [join(prefix, entry.name)],
  );
}

test('the generated contract types match wit/projection.wit', () => {
  const out = mkdtempSync(join(tmpdir(), 'wit-types-'));
  try {
    const jco = join(sdk, 'node_modules', '.bin', 'jco');
    execFileSync(jco, ['guest-types', join(sdk, '..', 'wit', 'projection.wit'), '-o', out], { stdio: 'pipe' });
    const checkedIn = join(sdk, 'src', 'wit');
    assert.deepEqual(files(out).sort(), files(checkedIn).sort());
    for (const file of files(out)) {
      assert.equal(readFileSync(join(checkedIn, file), 'utf8'), readFileSync(join(out, file), 'utf8'), `${file}: run npm run wit-types`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
