// The web console in a real browser: the system's Chromium, headless,
// driven by playwright-core against a running host (tests/tests/it/console.rs
// starts it with the examples deployed, one of them faulted).
//
// Environment: PROJECTOR_URL, PROJECTOR_TOKEN, PROJECTOR_BROWSER (the
// Chromium executable), WASM_TALLY and WASM_TALLY_V2 (a module and its next
// version to deploy through the page), SCREENSHOTS (a directory for one
// screenshot per page). Prints "ok <step>" per step; exits non-zero with the
// failing step's reason.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const url = need('PROJECTOR_URL');
const token = need('PROJECTOR_TOKEN');
const shots = need('SCREENSHOTS');
mkdirSync(shots, { recursive: true });

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function api(method, path, body) {
  const response = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Registers a user through the API (appends a UserRegistered event). */
async function registerUser(n) {
  const answer = await api('POST', '/users', {
    email: `browser${n}@example.com`,
    username: `browser${n}`,
    password: 'correct horse battery staple',
  });
  check(answer.status === 201, `POST /users answered ${answer.status}: ${JSON.stringify(answer.body)}`);
}

const browser = await chromium.launch({
  executablePath: need('PROJECTOR_BROWSER'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-background-networking'],
});
const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));
// An answer with an error status is logged by the browser itself ("Failed to
// load resource"): the test provokes some on purpose (a refused deploy).
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
});
const byId = (id) => page.getByTestId(id);
const row = (name) => page.locator(`[data-testid="projection-row"][data-name="${name}"]`);

async function step(name, body) {
  await body();
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  console.log(`ok ${name}`);
}

try {
  await step('read-only', async () => {
    await page.goto(url + '/');
    await row('user-directory').waitFor();
    check(await byId('readonly-hint').isVisible(), 'the read-only hint is shown without a token');
    await page.goto(url + '/#/projections/user-directory');
    await byId('action-stop').waitFor();
    for (const action of ['stop', 'start', 'reset', 'retry', 'rollback', 'delete']) {
      const button = byId(`action-${action}`);
      if (await button.count()) check(await button.isDisabled(), `${action} is disabled without a token`);
    }
    await page.goto(url + '/#/deploy');
    check(await byId('deploy-submit').isDisabled(), 'deploy is disabled without a token');
    await page.goto(url + '/#/try');
    check(await byId('try-submit').isDisabled(), 'try is disabled without a token');
    // The API refuses a change without the token, whatever the page does.
    const refused = await fetch(url + '/projections/user-directory/stop', { method: 'POST' });
    check(refused.status === 401, `a stop without a token answered ${refused.status}`);
  });

  await step('overview', async () => {
    await page.goto(url + '/');
    await byId('token-input').fill(token);
    await byId('token-save').click();
    check(!(await byId('readonly-hint').isVisible()), 'the hint goes once the token is saved');
    for (const name of ['user-directory', 'signup-stats', 'inventory']) await row(name).waitFor();
    const events = row('user-directory').getByTestId('events');
    const before = Number(await events.getAttribute('data-value'));
    for (let n = 0; n < 3; n++) await registerUser(n);
    // The counter moves without a reload.
    await page.waitForFunction(
      ([selector, from]) => Number(document.querySelector(selector)?.dataset.value) >= from + 3,
      ['[data-testid="projection-row"][data-name="user-directory"] [data-testid="events"]', before],
    );
  });

  await step('fault', async () => {
    await row('panicking').getByRole('link', { name: 'panicking' }).click();
    const fault = byId('fault');
    await fault.waitFor();
    check((await byId('fault-stream').textContent()) === 'boom-1', 'the fault names its stream');
    check((await byId('fault-event-type').textContent()) === 'Boom', 'the fault names its event type');
  });

  await step('stop-start', async () => {
    await page.goto(url + '/#/projections/signup-stats');
    await byId('action-stop').click();
    await byId('confirm-yes').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="status-state"]')?.textContent.includes('stopped'));
    await byId('action-start').click();
    await byId('confirm-yes').click();
    await page.waitForFunction(() => /running|catching/.test(document.querySelector('[data-testid="status-state"]')?.textContent || ''));
  });

  await step('deploy', async () => {
    await page.goto(url + '/#/deploy');
    await byId('deploy-name').fill('tally');
    await byId('deploy-file').setInputFiles(need('WASM_TALLY'));
    await byId('deploy-submit').click();
    await page.waitForFunction(() => /201|deployed|created/i.test(document.querySelector('[data-testid="deploy-result"]')?.textContent || ''));
    const listed = await api('GET', '/projections/tally');
    check(listed.status === 200, 'the page deployed tally');
    // A new version of it, swapped in at its checkpoint.
    await byId('deploy-name').fill('tally');
    await byId('deploy-file').setInputFiles(need('WASM_TALLY_V2'));
    await byId('deploy-mode').selectOption('continue');
    await byId('deploy-submit').click();
    await page.waitForFunction(() => /now runs version/.test(document.querySelector('[data-testid="deploy-result"]')?.textContent || ''));
    const swapped = await api('GET', '/projections/tally');
    check(swapped.body.version !== listed.body.version, `the new version serves: ${listed.body.version} -> ${swapped.body.version}`);
    // A refusal in plain words.
    await byId('deploy-name').fill('not-wasm');
    await byId('deploy-file').setInputFiles({ name: 'bad.wasm', mimeType: 'application/wasm', buffer: Buffer.from('nope') });
    await byId('deploy-submit').click();
    await page.waitForFunction(() => /not a WebAssembly module/i.test(document.querySelector('[data-testid="deploy-result"]')?.textContent || ''));
  });

  await step('try', async () => {
    const before = await api('GET', '/projections/user-directory/collections/users/u-try');
    check(before.status === 404, 'no u-try before the trial');
    await page.goto(url + '/#/try');
    await byId('try-projection').selectOption('user-directory');
    await byId('try-source-events').check();
    await byId('try-events').fill(JSON.stringify([{
      stream: 'user-u-try', type: 'UserRegistered',
      data: { userId: 'u-try', email: 'try@example.com', username: 'trying', passwordHash: 'x', registeredAt: '2026-12-07T00:00:00Z' },
      metadata: { schemaVersion: 2 },
    }]));
    await byId('try-submit').click();
    await page.waitForFunction(() => (document.querySelector('[data-testid="try-writes"]')?.textContent || '').includes('u-try'));
    const after = await api('GET', '/projections/user-directory/collections/users/u-try');
    check(after.status === 404, 'the trial committed nothing');
  });

  await step('explore', async () => {
    await page.goto(url + '/#/explore/user-directory');
    await byId('explore-collection').fill('users');
    await byId('explore-filter').fill('username=browser1');
    await byId('explore-submit').click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="explore-item"]').length === 1);
    await page.waitForFunction(() => /\b1\b/.test(document.querySelector('[data-testid="explore-count"]')?.textContent || ''));
    const text = await byId('explore-items').textContent();
    check(text.includes('browser1@example.com'), 'the document is shown');
  });

  check(consoleErrors.length === 0, `the page logged errors: ${consoleErrors.join(' | ')}`);
} catch (e) {
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
