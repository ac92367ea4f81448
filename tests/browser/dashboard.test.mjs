// Paddock dashboard end to end in Debian's headless Chromium (playwright-core
// with executablePath; never a downloaded browser). Run by run.sh, which
// starts the hub and sets HUB_URL, HUB_TOKEN, HUB_USER, HUB_PASSWORD,
// SCREENSHOTS and WORK.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import { chromium } from 'playwright-core';

const HUB = process.env.HUB_URL;
const TOKEN = process.env.HUB_TOKEN;
const USER = process.env.HUB_USER || 'alice';
const PASSWORD = process.env.HUB_PASSWORD;
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
const WORK = process.env.WORK || fs.mkdtempSync('/tmp/paddock-e2e-');
const REPO = `${USER}/e2e-model`;
const BIG = 60 * 1024 * 1024 + 12345; // over the 50 MiB multipart threshold: 4 parts of 16 MiB

let browser, context, page;

async function hubApi(method, p, body, token = TOKEN) {
  const r = await fetch(HUB + p, {
    method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null; try { data = JSON.parse(text); } catch { data = text; }
  return { status: r.status, data };
}

/** Waits until the upload form finishes; fails at once with the form's error if it shows one. */
async function uploadDone(timeout) {
  await page.waitForSelector('#upload-status[data-done="true"], .form-error:not([hidden])', { timeout });
  const err = await page.$('.form-error:not([hidden])');
  if (err) throw new Error(`the upload failed: ${await err.textContent()}`);
}

/** Records every text the upload list's file statuses show (however briefly). */
async function recordStatuses() {
  await page.evaluate(() => {
    window.__statuses = [];
    const list = document.getElementById('upload-list');
    new MutationObserver(() => list.querySelectorAll('.file-status').forEach((s) => window.__statuses.push(s.textContent)))
      .observe(list, { subtree: true, childList: true, characterData: true });
  });
}

async function shot(name, p = page) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** A tiny valid safetensors file. */
function safetensors() {
  const header = JSON.stringify({
    __metadata__: { format: 'pt' },
    'embeddings.weight': { dtype: 'F32', shape: [4, 8], data_offsets: [0, 128] },
    'pooler.bias': { dtype: 'F32', shape: [8], data_offsets: [128, 160] },
  });
  const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
  const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, Buffer.from(padded), Buffer.alloc(160)]);
}

before(async () => {
  assert.ok(HUB && TOKEN, 'run through tests/browser/run.sh');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => console.error('page error:', e.message));
});

after(async () => { await browser?.close(); });

test('sign in', async () => {
  await page.goto(`${HUB}/login?next=/settings`);
  await shot('login');
  await page.fill('#username', USER);
  await page.fill('#password', 'wrong-password');
  await page.click('button[type=submit]');
  await page.waitForSelector('#err-password:not([hidden])');
  await page.fill('#password', PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForURL(`${HUB}/settings`);
  assert.match(await page.textContent('.nav .me'), new RegExp(USER));
});

test('home page and a friendly 404', async () => {
  const r = await page.goto(`${HUB}/`);
  assert.equal(r.status(), 200);
  assert.match(r.headers()['content-security-policy'], /default-src 'self'/);
  await shot('home');
  const nf = await page.goto(`${HUB}/${USER}/does-not-exist`);
  assert.equal(nf.status(), 404);
  assert.equal(await page.textContent('h1'), 'Repository not found');
  await shot('not-found');
});

test('create a repo', async () => {
  await page.goto(`${HUB}/new`);
  await page.click('button[type=submit]');
  await page.waitForSelector('#err-name:not([hidden])'); // error next to the field
  await page.fill('#name', 'bad name!');
  await page.click('button[type=submit]');
  assert.match(await page.textContent('#err-name'), /letters, digits/);
  await shot('new-repo-error');
  await page.fill('#name', 'e2e-model');
  await page.click('button[type=submit]');
  await page.waitForURL(`${HUB}/${REPO}/upload`);
});

test('upload a folder with a large file: progress reaches 100%', { timeout: 600_000 }, async () => {
  const dir = path.join(WORK, 'model-folder');
  fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'README.md'),
    '---\nlicense: mit\npipeline_tag: feature-extraction\nlibrary_name: transformers\ntags:\n- e2e\n---\n# E2E model\n\nUploaded from **a browser**.\n\n<script>alert(1)</script>\n');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['BertModel'], model_type: 'bert' }));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), safetensors());
  fs.writeFileSync(path.join(dir, 'onnx', 'notes.txt'), 'hello from a folder\n');
  // The large file: written in 1 MiB blocks, with its sha256 for the check below.
  const fd = fs.openSync(path.join(dir, 'big.bin'), 'w');
  const h = crypto.createHash('sha256');
  let left = BIG, i = 0;
  while (left > 0) {
    const n = Math.min(left, 1 << 20);
    const block = crypto.createHash('sha512').update(String(i++)).digest();
    const buf = Buffer.alloc(n, block);
    fs.writeSync(fd, buf); h.update(buf); left -= n;
  }
  fs.closeSync(fd);
  const bigSha = h.digest('hex');

  await page.goto(`${HUB}/${REPO}/upload`);
  await page.setInputFiles('#pick-folder', dir);
  await page.waitForSelector('#upload-list tbody tr:nth-child(5)');
  await page.fill('#summary', 'Upload a model folder from the browser');
  await shot('upload-ready');
  const seen = new Set();
  const poll = setInterval(async () => {
    try { seen.add(Number(await page.getAttribute('#overall-bar', 'value'))); } catch { /* navigating */ }
  }, 100);
  await page.click('#upload-submit');
  await uploadDone(540_000);
  clearInterval(poll);
  const final = Number(await page.getAttribute('#overall-bar', 'value'));
  assert.equal(final, 100);
  assert.equal(await page.textContent('#overall-text'), '100%');
  const between = [...seen].filter((v) => v > 0 && v < 100);
  assert.ok(between.length >= 2, `progress moved through intermediate values: ${[...seen].sort((a, b) => a - b)}`);
  const statuses = await page.$$eval('#upload-list .file-status', (els) => els.map((e) => e.textContent));
  assert.deepEqual(statuses, statuses.map(() => 'committed'));
  await shot('upload-done');

  // The hub has the large file, verified, as LFS, with the right digest.
  const tree = await hubApi('GET', `/api/models/${REPO}/tree/main?recursive=true`);
  const big = tree.data.find((e) => e.path === 'big.bin');
  assert.equal(big.size, BIG);
  assert.equal(big.lfs.oid, bigSha);
  assert.ok(tree.data.find((e) => e.path === 'onnx/notes.txt'), 'folder structure kept');
});

test('a failed part is retried; nothing is committed until every file verifies', { timeout: 600_000 }, async () => {
  const file = path.join(WORK, 'retry.bin');
  const size = 52 * 1024 * 1024; // multipart: 16 + 16 + 16 + 4 MiB
  fs.writeFileSync(file, Buffer.alloc(size, 7));
  const before = await hubApi('GET', `/api/models/${REPO}/commits/main`);
  await page.goto(`${HUB}/${REPO}/upload`);
  await page.setInputFiles('#pick-files', file);
  await page.fill('#summary', 'Add retry.bin');
  // Part 2 fails once (then the network is fine again); completing always fails.
  const part2 = /\/lfs\/upload\/[^/]+\/part\/2\?/;
  const complete = /\/lfs\/upload\/[^/]+\/complete\?/;
  let partFailures = 0;
  await page.route(part2, async (route) => {
    partFailures++;
    await page.unroute(part2);
    await route.fulfill({ status: 500, body: 'injected failure' });
  });
  await page.route(complete, (route) => route.fulfill({ status: 500, body: 'injected failure' }));
  try {
    await recordStatuses();
    await page.click('#upload-submit');
    await page.waitForSelector('.form-error:not([hidden])', { timeout: 300_000 });
  } finally {
    // Later tests upload through the same page: never leave a failure behind.
    await page.unroute(part2);
    await page.unroute(complete);
  }
  const statuses = await page.evaluate(() => window.__statuses);
  assert.equal(partFailures, 1);
  assert.ok(statuses.some((s) => /retrying part 2 \(1\)/.test(s)), statuses.join(' | '));
  assert.match(await page.textContent('#upload-list .file-status'), /retried part 2/, 'the retry stays visible');
  assert.match(await page.textContent('.form-error'), /nothing was committed: completing the upload failed after 4 tries/);
  await shot('upload-failed');
  const after = await hubApi('GET', `/api/models/${REPO}/commits/main`);
  assert.equal(after.data.length, before.data.length, 'no commit was made');
  // With the network back, the same form finishes the job.
  await page.click('#upload-submit');
  await uploadDone(300_000);
  assert.equal(await page.textContent('#overall-text'), '100%');
  const tree = await hubApi('GET', `/api/models/${REPO}/tree/main`);
  assert.equal(tree.data.find((e) => e.path === 'retry.bin').size, size);
});

test('see the model card and the file list', async () => {
  await page.goto(`${HUB}/${REPO}`);
  assert.equal(await page.textContent('.markdown h1'), 'E2E model');
  assert.match(await page.textContent('.markdown'), /<script>alert\(1\)<\/script>/); // shown as text
  assert.equal(await page.$('.markdown script'), null);
  assert.match(await page.textContent('.badges'), /License: mit/);
  await shot('repo-card');
  await page.click('.tabs >> text=Files');
  await page.waitForSelector('table.files');
  const rows = await page.$$eval('table.files tbody tr', (trs) => trs.map((tr) => tr.textContent.replace(/\s+/g, ' ')));
  assert.ok(rows.some((r) => /big\.bin LFS 62\.9 MB/.test(r)), rows.join('\n'));
  assert.ok(rows.some((r) => /model\.safetensors .*safetensors/.test(r)));
  await shot('repo-files');
  await page.click('text=model.safetensors');
  await page.waitForSelector('.tensor-table');
  assert.match(await page.textContent('.tensors .total'), /\(40\) in 2 tensors/);
  await shot('blob-safetensors');
  await page.goto(`${HUB}/${REPO}/blob/main/config.json`);
  await page.waitForSelector('ol.code li#L1');
  await shot('blob-text');
  await page.goto(`${HUB}/models?task=feature-extraction`);
  assert.ok(await page.$(`a.repo-name[href="/${REPO}"]`), 'the repo is listed under its task');
  await shot('home-with-repos');
});

test('browse history', async () => {
  await page.goto(`${HUB}/${REPO}`);
  await page.click('.tabs >> text=History');
  await page.waitForSelector('.commit-list');
  const titles = await page.$$eval('.commit-title', (els) => els.map((e) => e.textContent.trim()));
  assert.equal(titles[0], 'Add retry.bin');
  assert.equal(titles[1], 'Upload a model folder from the browser');
  await shot('history');
  await page.click('.commit-title >> nth=1 >> a');
  await page.waitForSelector('.changes');
  const changed = await page.$$eval('.changes li', (els) => els.map((e) => e.textContent.replace(/\s+/g, ' ').trim()));
  for (const f of ['big.bin', 'config.json', 'model.safetensors', 'onnx/notes.txt', 'README.md']) {
    assert.ok(changed.some((c) => c.endsWith(f) && c.startsWith('added')), `${f} in ${changed}`);
  }
  await shot('commit');
});

test('repo settings and narrow screen', async () => {
  await page.goto(`${HUB}/${REPO}/settings`);
  await page.fill('#confirm', 'wrong');
  await page.click('form[data-form="delete-repo"] button[type=submit]');
  await page.waitForSelector('#err-confirm:not([hidden])');
  await shot('repo-settings');
  const narrow = await context.newPage();
  await narrow.setViewportSize({ width: 390, height: 844 });
  await narrow.goto(`${HUB}/${REPO}`);
  const overflow = await narrow.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
  await shot('repo-card-narrow', narrow);
  await narrow.close();
});

test('keyboard and labels: skip link, visible focus, arrow-key tabs, every control labelled', async () => {
  await page.goto(`${HUB}/${REPO}`);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
  assert.notEqual(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), 'none');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => location.hash), '#main');
  await page.focus('#tab-hub');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getAttribute('#tab-transformers', 'aria-selected'), 'true');
  assert.ok(await page.isVisible('#sn-transformers'));
  assert.ok(!(await page.isVisible('#sn-hub')));
  for (const p of ['/', `/${REPO}/upload`, `/${REPO}/settings`, '/new', '/settings/tokens',
    `/inference/new?repo=${REPO}`, `/${REPO}/tree/main`, '/organizations/acme']) {
    await page.goto(HUB + p);
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
      .map((el) => el.id || el.name));
    assert.deepEqual(unlabelled, [], `unlabelled controls on ${p}`);
  }
});

test('create and revoke a token', async () => {
  await page.goto(`${HUB}/settings/tokens`);
  await page.fill('#token-name', 'from-the-browser');
  await page.check('input[name=scopes][value=write]');
  await page.click('form[data-form="create-token"] button[type=submit]');
  await page.waitForSelector('#new-secret:not([hidden])');
  const secret = (await page.textContent('#secret-value')).trim();
  assert.match(secret, /^pdk_/);
  assert.equal((await hubApi('GET', '/api/whoami-v2', undefined, secret)).status, 200);
  await shot('tokens-created');
  await page.reload();
  assert.equal(await page.$(`text=${secret}`), null, 'the secret is shown once');
  const row = page.locator('tr', { hasText: 'from-the-browser' });
  await row.locator('[data-revoke]').click();
  await row.waitFor({ state: 'detached' });
  assert.equal((await hubApi('GET', '/api/whoami-v2', undefined, secret)).status, 401);
  await shot('tokens');
});

test('deploy an endpoint: the form, then its page with live status and charts', async () => {
  await page.goto(`${HUB}/${REPO}`);
  await page.click('text=Deploy');
  await page.waitForURL(/\/inference\/new\?repo=/);
  assert.equal(await page.inputValue('#ep-task'), 'feature-extraction', 'task preselected from the card');
  await page.fill('#ep-name', 'bad name');
  await page.click('form[data-form="deploy"] button[type=submit]');
  await page.waitForSelector('#err-name:not([hidden])'); // the API's refusal, next to the field
  await shot('deploy-error');
  await page.fill('#ep-name', 'e2e-ep');
  await page.fill('#ep-min', '0');
  assert.equal(await page.inputValue('#ep-precision'), 'f32', 'full precision unless asked');
  await page.selectOption('#ep-precision', 'bf16');
  await page.click('form[data-form="deploy"] button[type=submit]');
  await page.waitForURL(`${HUB}/inference/${USER}/e2e-ep`);
  assert.match(await page.textContent('header.repo-head'), /\bbf16\b/, 'the page shows the precision asked for');
  assert.equal(await page.$$eval('svg.chart', (s) => s.length), 3);
  assert.match(await page.textContent('#sn-hfclient'), new RegExp(`InferenceClient\\("${HUB}/endpoints/${USER}/e2e-ep"`));
  // This repo is not a servable model: the in-process worker refuses it, and
  // the page shows that, with the worker's reason, without a reload.
  await page.waitForSelector('#ep-status.status-failed', { timeout: 60_000 });
  assert.match(await page.textContent('#ep-message'), /config\.json/);
  await page.locator('#ep-events li .status-failed').first().waitFor({ timeout: 10_000 });
  await shot('endpoint');
  // The list updates its status without a reload: the poller rewrites the cell.
  await page.goto(`${HUB}/inference`);
  const cell = page.locator(`[data-endpoint="${USER}/e2e-ep"] [data-field="replicas"]`);
  await cell.filter({ hasText: /running/ }).waitFor({ timeout: 10_000 });
  await shot('endpoints');
});

test('get a result in the playground (a real model uploaded from the browser)', { timeout: 600_000 }, async () => {
  // all-MiniLM-L6-v2 from PyPI (run.sh fetches it with scripts/worker/fetch-fixtures.sh).
  const dir = process.env.PADDOCK_MINILM_DIR;
  assert.ok(dir && fs.existsSync(path.join(dir, 'model.safetensors')), 'PADDOCK_MINILM_DIR names the MiniLM folder');
  await page.goto(`${HUB}/new`);
  await page.fill('#name', 'minilm');
  await page.click('button[type=submit]');
  await page.waitForURL(`${HUB}/${USER}/minilm/upload`);
  await page.setInputFiles('#pick-folder', dir);
  await page.waitForSelector('#upload-list tbody tr');
  await page.click('#upload-submit');
  await uploadDone(300_000);
  await page.goto(`${HUB}/inference/new?repo=${USER}/minilm`);
  await page.fill('#ep-name', 'minilm-ep');
  await page.selectOption('#ep-task', 'feature-extraction');
  await page.click('form[data-form="deploy"] button[type=submit]');
  await page.waitForURL(`${HUB}/inference/${USER}/minilm-ep`);
  // The status pill updates without a reload as hub-api's in-process worker
  // pulls and loads the model.
  try {
    await page.waitForSelector('#ep-status.status-running', { timeout: 240_000 });
  } catch (e) {
    await shot('endpoint-not-running');
    const ep = await hubApi('GET', `/api/v1/endpoints/${USER}/minilm-ep`);
    throw new Error(`endpoint did not become running: ${JSON.stringify(ep.data).slice(0, 500)}`);
  }
  await page.locator('#ep-replicas .status-running').waitFor({ timeout: 10_000 });
  await page.locator('#ep-events li .status-running').first().waitFor({ timeout: 10_000 });
  await page.fill('#play-input', 'The dashboard runs a real model.');
  await page.click('#playground button[type=submit]');
  await page.waitForSelector('#play-result[data-done="true"]', { timeout: 120_000 });
  assert.match(await page.textContent('#play-result'), /Embedding with 384 dimensions/);
  const shown = (await page.textContent('pre.embedding')).replace(/[[\]…\s]/g, '').split(',').filter(Boolean).map(Number);
  assert.equal(shown.length, 16);
  assert.ok(shown.every(Number.isFinite) && shown.some((x) => x !== 0), `numbers: ${shown}`);
  assert.match(await page.textContent('#play-status'), /Done in \d+ ms/);
  await shot('endpoint-playground');
});

test('organization page: members, roles, storage', async () => {
  const r = await page.goto(`${HUB}/organizations/acme`);
  assert.equal(r.status(), 200);
  assert.ok(await page.$(`select[data-member-role="${USER}"]`), 'admins can change roles');
  assert.ok(await page.$('#quota-bar'));
  await shot('organization');
  await page.goto(`${HUB}/organizations/acme/audit`);
  assert.match(await page.textContent('table.audit'), /org\.created/);
  await shot('organization-audit');
});

test('a cross-origin form post changes nothing (CSRF)', async () => {
  // An attacker's page on another origin auto-submits a text/plain form that
  // is valid JSON to the API, carrying the victim's session cookie.
  const evil = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/html');
    res.end(`<form id=f method=POST enctype="text/plain" action="${HUB}/api/repos/create">
      <input name='{"name":"csrf-victim","x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  // Same site (127.0.0.1), other origin (port): the Lax session cookie is sent, so
  // only the hub's CSRF check stands between the form and the API.
  const evilUrl = `http://127.0.0.1:${evil.address().port}/`;
  const resp = page.waitForResponse((r) => r.url().includes('/api/repos/create'));
  await page.goto(evilUrl);
  const r = await resp;
  assert.equal(r.status(), 403);
  assert.equal((await r.json()).code, 'csrf_rejected');
  evil.close();
  const check = await hubApi('GET', `/api/models/${USER}/csrf-victim`);
  assert.equal(check.status, 404, 'the cross-site post created nothing');
});
