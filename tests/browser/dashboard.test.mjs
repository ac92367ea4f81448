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
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HUB = process.env.HUB_URL;
const TOKEN = process.env.HUB_TOKEN;
const USER = process.env.HUB_USER || 'alice';
const PASSWORD = process.env.HUB_PASSWORD;
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
const WORK = process.env.WORK || fs.mkdtempSync('/tmp/paddock-e2e-');
const REPO = `${USER}/e2e-model`;
const BIG = 60 * 1024 * 1024 + 12345; // over the 50 MiB multipart threshold: 4 parts of 16 MiB
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The real generation fixture (Gemma-3-270M Q4_K_M, a base model whose GGUF
// has no chat template) and the Gemma turn format shipped beside it.
const GEMMA = process.env.PADDOCK_GEMMA_GGUF;
const CHAT_TEMPLATE = path.join(ROOT, 'fixtures', 'generation', 'gemma3-chat_template.jinja');

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

/** sha256 of a file, streamed. */
async function sha256File(file) {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk);
  return h.digest('hex');
}

/**
 * Seeds a model repo through the hub's API as huggingface_hub does: files
 * named in `lfs` go through the LFS batch API (multipart above the hub's
 * threshold, then verify), the rest inline, all in one commit.
 * files: [{ path, file }] (a local path) or [{ path, content }] (a string).
 */
async function pushRepo(repo, files, summary) {
  const [ns, name] = repo.split('/');
  const created = await hubApi('POST', '/api/repos/create', { name, type: 'model', ...(ns === USER ? {} : { organization: ns }) });
  assert.ok(created.status === 200 || created.status === 409, `create ${repo}: ${created.status} ${JSON.stringify(created.data)}`);
  const lines = [JSON.stringify({ key: 'header', value: { summary } })];
  const lfsHeaders = { Authorization: `Bearer ${TOKEN}`, Accept: 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json' };
  for (const f of files) {
    if (f.content !== undefined) {
      lines.push(JSON.stringify({ key: 'file', value: { path: f.path, content: Buffer.from(f.content).toString('base64'), encoding: 'base64' } }));
      continue;
    }
    const size = fs.statSync(f.file).size;
    const oid = await sha256File(f.file);
    const b = await fetch(`${HUB}/${repo}.git/info/lfs/objects/batch`, {
      method: 'POST', headers: lfsHeaders,
      body: JSON.stringify({ operation: 'upload', transfers: ['basic', 'multipart'], hash_algo: 'sha256',
        ref: { name: 'refs/heads/main' }, objects: [{ oid, size }] }),
    });
    assert.equal(b.status, 200, `LFS batch for ${f.path}: ${await b.clone().text()}`);
    const obj = (await b.json()).objects[0];
    assert.ok(!obj.error, `LFS batch for ${f.path}: ${JSON.stringify(obj.error)}`);
    const actions = obj.actions || {};
    if (actions.upload) {
      const up = actions.upload;
      const header = up.header || {};
      if (header.chunk_size) {
        const chunk = Number(header.chunk_size);
        const parts = Object.keys(header).filter((k) => /^\d+$/.test(k)).map(Number).sort((a, c) => a - c);
        const fd = fs.openSync(f.file, 'r');
        const etags = [];
        try {
          for (const n of parts) {
            const len = Math.min(chunk, size - (n - 1) * chunk);
            const buf = Buffer.alloc(len);
            fs.readSync(fd, buf, 0, len, (n - 1) * chunk);
            const r = await fetch(header[String(n)], { method: 'PUT', body: buf });
            assert.ok(r.ok, `part ${n} of ${f.path}: ${r.status} ${await r.text()}`);
            etags.push({ partNumber: n, etag: (r.headers.get('etag') || '').replace(/"/g, '') });
          }
        } finally { fs.closeSync(fd); }
        const done = await fetch(up.href, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ oid, parts: etags }) });
        assert.ok(done.ok, `completing ${f.path}: ${done.status} ${await done.text()}`);
      } else {
        const r = await fetch(up.href, { method: 'PUT', body: fs.readFileSync(f.file) });
        assert.ok(r.ok, `uploading ${f.path}: ${r.status} ${await r.text()}`);
      }
      if (actions.verify) {
        const v = await fetch(actions.verify.href, { method: 'POST', headers: lfsHeaders, body: JSON.stringify({ oid, size }) });
        assert.ok(v.ok, `verifying ${f.path}: ${v.status} ${await v.text()}`);
      }
    }
    lines.push(JSON.stringify({ key: 'lfsFile', value: { path: f.path, algo: 'sha256', oid, size } }));
  }
  const c = await fetch(`${HUB}/api/models/${repo}/commit/main`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' },
    body: lines.join('\n') + '\n',
  });
  assert.equal(c.status, 200, `commit to ${repo}: ${await c.clone().text()}`);
}

/** Deploys `repo` from the dashboard's form as a text-generation endpoint and waits until it runs. */
async function deployGeneration(repo, name) {
  await page.goto(`${HUB}/inference/new?repo=${repo}`);
  const tasks = await page.$$eval('#ep-task option', (os) => os.map((o) => o.value));
  assert.ok(tasks.includes('text-generation'), `the task picker offers text-generation: ${tasks}`);
  assert.equal(await page.inputValue('#ep-task'), 'text-generation', 'preselected from the card\'s pipeline_tag');
  await page.fill('#ep-name', name);
  await page.click('form[data-form="deploy"] button[type=submit]');
  await page.waitForURL(`${HUB}/inference/${USER}/${name}`);
  try {
    await page.waitForSelector('#ep-status.status-running', { timeout: 300_000 });
  } catch (e) {
    await shot(`${name}-not-running`);
    const ep = await hubApi('GET', `/api/v1/endpoints/${USER}/${name}`);
    throw new Error(`endpoint did not become running: ${JSON.stringify(ep.data).slice(0, 800)}`);
  }
}

/**
 * Records, on every change of the chat log, the newest assistant bubble's
 * text length and state, so a test can tell a stream from a final dump.
 */
async function recordBubble() {
  await page.evaluate(() => {
    window.__bubble = [];
    const log = document.getElementById('chat-log');
    new MutationObserver(() => {
      const b = [...log.querySelectorAll('.msg-assistant')].pop();
      if (b) window.__bubble.push({ len: b.querySelector('.msg-text').textContent.length, state: b.getAttribute('data-state'), t: performance.now() });
    }).observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/** Sends a chat message from the playground. */
async function chatSend(text, { temperature = '0', maxTokens = '48', raw = false } = {}) {
  await page.fill('#chat-temperature', temperature);
  await page.fill('#chat-max-tokens', maxTokens);
  if ((await page.isChecked('#chat-raw')) !== raw) await page.click('#chat-raw');
  await page.fill('#chat-input', text);
  await page.click('#chat-send');
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

test('a dataset page shows its rows: typed columns, splits, next page; converting first', async () => {
  const name = `e2e-rows-${Date.now()}`;
  const created = await hubApi('POST', '/api/repos/create', { name, type: 'dataset' });
  assert.equal(created.status, 200, JSON.stringify(created.data));
  const rows = Array.from({ length: 60 }, (_, i) => `${i},row number ${i},${(i * 0.5).toFixed(1)}`);
  const files = { 'data/train.csv': `id,text,score\n${rows.join('\n')}\n`, 'data/test.csv': 'id,text,score\n0,held out,1.5\n' };
  const lines = [JSON.stringify({ key: 'header', value: { summary: 'rows' } })];
  for (const [p, c] of Object.entries(files)) {
    lines.push(JSON.stringify({ key: 'file', value: { path: p, content: Buffer.from(c).toString('base64'), encoding: 'base64' } }));
  }
  const c = await fetch(`${HUB}/api/datasets/${USER}/${name}/commit/main`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' },
    body: lines.join('\n') + '\n',
  });
  assert.equal(c.status, 200, await c.text());
  await page.goto(`${HUB}/datasets/${USER}/${name}`);
  // Converting (or already done on a fast machine): the section is there either way.
  const state = await page.getAttribute('#viewer', 'data-state');
  assert.ok(['pending', 'ready'].includes(state), `viewer state ${state}`);
  if (state === 'pending') assert.match(await page.textContent('#viewer'), /Converting/);
  for (let i = 0; i < 120 && (await page.getAttribute('#viewer', 'data-state')) !== 'ready'; i++) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert.equal(await page.getAttribute('#viewer', 'data-state'), 'ready');
  const heads = await page.$$eval('.viewer-table thead th', (ths) => ths.map((t) => t.textContent.replace(/\s+/g, ' ').trim()));
  assert.deepEqual(heads, ['#', 'id int64', 'text string', 'score float64']);
  let cells = await page.$$eval('.viewer-table tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  assert.equal(cells.length, 25);
  assert.deepEqual(cells[3], ['3', '3', 'row number 3', '1.5']);
  await shot('dataset-viewer');
  await page.click('.viewer-pager a[rel=next]');
  cells = await page.$$eval('.viewer-table tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  assert.deepEqual(cells[0], ['25', '25', 'row number 25', '12.5']);
  assert.match(await page.textContent('.viewer-pager'), /Rows 26.50 of 60/);
  await page.click('.viewer-splits a:has-text("test")');
  cells = await page.$$eval('.viewer-table tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  assert.deepEqual(cells, [['0', '0', 'held out', '1.5']]);
  // A malformed file: the page says why the viewer cannot show it.
  const bad = `${name}-bad`;
  assert.equal((await hubApi('POST', '/api/repos/create', { name: bad, type: 'dataset' })).status, 200);
  const body = [JSON.stringify({ key: 'header', value: { summary: 'bad' } }),
    JSON.stringify({ key: 'file', value: { path: 'train.csv', content: Buffer.from('a,b\n1,2\n3,4,5\n').toString('base64'), encoding: 'base64' } })].join('\n') + '\n';
  const b = await fetch(`${HUB}/api/datasets/${USER}/${bad}/commit/main`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' }, body,
  });
  assert.equal(b.status, 200, 'the commit of a malformed file succeeds');
  for (let i = 0; i < 120; i++) {
    await page.goto(`${HUB}/datasets/${USER}/${bad}`);
    if ((await page.getAttribute('#viewer', 'data-state')) === 'error') break;
    await page.waitForTimeout(500);
  }
  const reason = await page.textContent('#viewer .viewer-status');
  assert.match(reason, /cannot show/);
  assert.match(reason, /train\.csv/);
  assert.match(reason, /line\D{0,3}3/);
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

test('discussions: open one, reply, and merge a pull request with its diff', async () => {
  await page.goto(`${HUB}/${REPO}`);
  await page.click('.tabs >> text=Community');
  await page.waitForSelector('#community-title');
  await page.fill('#d-title', 'Does it run on CPU?');
  await page.fill('#d-description', 'Asking from **the browser**.');
  await page.click('form[data-form="new-discussion"] button[type=submit]');
  await page.waitForURL(/\/discussions\/\d+$/);
  assert.equal((await page.textContent('#events .markdown strong')).trim(), 'the browser');
  await page.fill('#c-comment', 'Yes: a reply from the browser.');
  await page.click('form[data-form="comment"] button[type=submit]');
  await page.waitForSelector('#events >> text=a reply from the browser');
  await shot('discussion');

  // A pull request (made through the API as a client would), merged from its page.
  const line = (o) => JSON.stringify(o) + '\n';
  const body = line({ key: 'header', value: { summary: 'Add notes from a pull request' } })
    + line({ key: 'file', value: { path: 'notes/pr.txt', encoding: 'base64', content: Buffer.from('proposed in a pull request\n').toString('base64') } });
  const r = await fetch(`${HUB}/api/models/${REPO}/commit/main?create_pr=1`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' }, body,
  });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  const pr = JSON.parse(text).pullRequestUrl.split('/').pop();
  await page.goto(`${HUB}/${REPO}/discussions/${pr}`);
  assert.match(await page.textContent('#diff'), /\+proposed in a pull request/);
  await shot('pull-request');
  await page.click('form[data-form="discussion-action"] button[value="merge"]');
  await page.waitForFunction(() => document.getElementById('thread-status').textContent.trim() === 'merged');
  const merged = await fetch(`${HUB}/${REPO}/resolve/main/notes/pr.txt`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(await merged.text(), 'proposed in a pull request\n');
  await page.goto(`${HUB}/${REPO}/discussions`);
  const listed = await page.$$eval('#discussion-list li', (els) => els.map((e) => e.textContent.replace(/\s+/g, ' ').trim()));
  assert.ok(listed.some((t) => t.includes('Add notes from a pull request') && t.includes('merged')), listed.join(' | '));
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

test('webhook deliveries: the log, and Redeliver', async () => {
  // A webhook on the repo (to a closed loopback port, which run.sh's --webhook-allow-private
  // permits: its attempts fail, as the log shows), and a branch created for it to report.
  const made = await hubApi('POST', '/api/settings/webhooks',
    { url: 'http://127.0.0.1:9/hook', watched: [{ type: 'model', name: REPO }], domains: ['repo'], secret: 'browser-secret' });
  assert.equal(made.status, 200, JSON.stringify(made.data));
  const id = made.data.webhook.id;
  assert.equal((await hubApi('POST', `/api/models/${REPO}/branch/hooked`, {})).status, 200);
  await page.goto(`${HUB}/settings/webhooks`);
  assert.equal(await page.$('text=browser-secret'), null, 'the secret is never shown');
  await page.click(`a[href="/settings/webhooks/${id}"]`);
  await page.waitForURL(`${HUB}/settings/webhooks/${id}`);
  const rows = page.locator('#delivery-table tbody tr');
  assert.equal(await rows.count(), 1);
  assert.match(await rows.first().textContent(), /repo\.content update/);
  await rows.first().locator('[data-redeliver]').click();
  await page.waitForSelector('#delivery-table tbody tr:nth-child(2)');
  assert.match(await rows.first().textContent(), /\(redelivery\)/);
  const log = await hubApi('GET', `/api/v1/webhooks/${id}/deliveries`);
  assert.equal(log.data.items.length, 2);
  assert.equal(log.data.items[0].redelivery_of, log.data.items[1].id);
  await shot('webhook-deliveries');
  assert.equal((await hubApi('DELETE', `/api/settings/webhooks/${id}`)).status, 200);
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

test('an encoder endpoint charts its prompt tokens, and zero completion tokens', async () => {
  // The gateway writes usage in batches: the page shows it within moments.
  let prompt = 0;
  for (let i = 0; i < 50 && prompt === 0; i++) {
    await page.goto(`${HUB}/inference/${USER}/minilm-ep`);
    prompt = Number(await page.textContent('#total-prompt-tokens'));
    if (prompt === 0) await page.waitForTimeout(200);
  }
  assert.ok(prompt > 0, 'the playground call\'s prompt tokens are counted');
  assert.equal(await page.textContent('#total-completion-tokens'), '0');
  assert.equal(Number(await page.textContent('#total-tokens')), prompt);
  const legend = await page.$$eval('#tokens-chart svg .legend', (ts) => ts.map((t) => t.textContent));
  assert.deepEqual(legend, ['prompt tokens', 'completion tokens']);
  assert.equal(await page.$('#chat'), null, 'encoders keep the task playground');
});

test('fine-tuning jobs: queue one from the form, watch it succeed, Deploy; cancel a running one', { timeout: 900_000 }, async () => {
  // A tiny sentence-pair dataset (the MiniLM repo comes from the playground test).
  const ds = `e2e-pairs-${Date.now()}`;
  assert.equal((await hubApi('POST', '/api/repos/create', { name: ds, type: 'dataset' })).status, 200);
  const pairs = (names) => 'anchor,positive\n' + names.map((n, i) => `who owns ${n}?,The ${n} service is owned by team ${i}.`).join('\n') + '\n';
  const lines = [JSON.stringify({ key: 'header', value: { summary: 'pairs' } })];
  for (const [p, c] of [['train.csv', pairs(['kestrel', 'marlin', 'juniper', 'tundra', 'quokka', 'zephyr', 'basalt', 'cobalt'])],
    ['test.csv', pairs(['saffron', 'wombat', 'lantern', 'obsidian'])]]) {
    lines.push(JSON.stringify({ key: 'file', value: { path: p, content: Buffer.from(c).toString('base64'), encoding: 'base64' } }));
  }
  const c = await fetch(`${HUB}/api/datasets/${USER}/${ds}/commit/main`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' }, body: lines.join('\n') + '\n',
  });
  assert.equal(c.status, 200, await c.text());

  await page.goto(`${HUB}/jobs`);
  await page.click('text=New job');
  await page.waitForURL(/\/jobs\/new/);
  await page.selectOption('#job-task', 'sentence-embedding');
  await page.fill('#job-base', `${USER}/minilm`);
  await page.fill('#job-dataset', `${USER}/${ds}`);
  await page.fill('#job-output', `${USER}/e2e-tuned`);
  await page.fill('#job-epochs', '0');
  await page.click('form[data-form="new-job"] button[type=submit]');
  // The API's refusal, next to the hyperparameters.
  await page.waitForSelector('#err-hyperparameters:not([hidden])');
  assert.match(await page.textContent('#err-hyperparameters'), /hyperparameters\.epochs/);
  await shot('job-new-error');
  // One optimizer step: 8 pairs in a batch of 8.
  await page.fill('#job-epochs', '1');
  await page.fill('#job-batch', '8');
  await page.fill('#job-seq', '16');
  await page.click('form[data-form="new-job"] button[type=submit]');
  await page.waitForURL(new RegExp(`/jobs/${USER}/[0-9a-f-]{36}$`));
  const jobUrl = page.url();
  assert.match(await page.textContent('#job-state'), /queued|running|succeeded/);
  // The page follows the job without a reload, then shows the result.
  await page.waitForSelector('#job-state.status-succeeded', { timeout: 600_000 });
  await page.waitForSelector('[data-job-deploy]');
  assert.match(await page.textContent('#job-metrics'), /test_accuracy_at_1/);
  assert.match(await page.textContent('#job-logs'), /untuned: test accuracy@1/);
  assert.match(await page.textContent('#job-steps'), /1\/1 steps/);
  assert.equal(await page.$('[data-job-cancel]'), null, 'an ended job has no Cancel button');
  await shot('job-succeeded');
  await page.click('[data-job-deploy]');
  await page.waitForURL(/\/inference\/new\?repo=/);
  assert.equal(await page.inputValue('#repository'), `${USER}/e2e-tuned`);
  assert.equal(await page.inputValue('#ep-task'), 'feature-extraction', 'the job\'s endpoint task is preselected');

  // A long job (created through the API), watched running and cancelled from its page.
  const r = await hubApi('POST', `/api/v1/jobs/${USER}`, {
    task: 'sentence-embedding', base_model: `${USER}/minilm`, dataset: `${USER}/${ds}`, output_repo: `${USER}/e2e-tuned-long`,
    hyperparameters: { epochs: 50, batch_size: 2, max_seq_length: 16 },
  });
  assert.equal(r.status, 201, JSON.stringify(r.data));
  await page.goto(`${HUB}/jobs/${USER}/${r.data.id}`);
  await page.waitForSelector('#job-state.status-running', { timeout: 120_000 });
  await page.locator('#job-logs span', { hasText: /untuned/ }).waitFor({ timeout: 120_000 });
  await shot('job-running');
  await page.click('[data-job-cancel]'); // the confirm() is accepted by the page's dialog handler
  await page.waitForSelector('#job-state.status-cancelled', { timeout: 60_000 });
  // The page reloads itself once its poll sees the ended job: wait for the
  // reloaded page, or the navigation below races that reload (ERR_ABORTED).
  await page.waitForSelector('[data-job-page][data-active="false"]', { state: 'attached', timeout: 30_000 });
  await page.waitForLoadState('load');
  assert.match(await page.textContent('#job-state'), /cancelled/);
  assert.match(await page.textContent('#job-error'), /cancelled/);
  // The list shows both jobs with their states.
  await page.goto(`${HUB}/jobs/${USER}`);
  assert.match(await page.textContent(`tr[data-job="${r.data.id}"]`), /cancelled/);
  assert.match(await page.textContent(`tr[data-job="${jobUrl.split('/').pop()}"]`), /succeeded/);
  await shot('jobs');
});

const NO_GEMMA = !GEMMA && 'PADDOCK_GEMMA_GGUF is not set (the Gemma-3-270M GGUF fixture)';

test('chat with a text-generation endpoint: the reply streams in, usage shows, Stop aborts', { timeout: 900_000, skip: NO_GEMMA }, async () => {
  assert.ok(fs.existsSync(GEMMA), `PADDOCK_GEMMA_GGUF names a file: ${GEMMA}`);
  assert.ok(fs.existsSync(CHAT_TEMPLATE), `the Gemma chat template is checked in at ${CHAT_TEMPLATE}`);
  const card = '---\npipeline_tag: text-generation\nlibrary_name: gguf\n---\n# Gemma 3 270M (Q4_K_M)\n';
  await pushRepo(`${USER}/gemma-chat`, [
    { path: 'README.md', content: card },
    { path: 'gemma-3-270m-q4_k_m.gguf', file: GEMMA },
    { path: 'chat_template.jinja', content: fs.readFileSync(CHAT_TEMPLATE, 'utf8') },
  ], 'Gemma 3 270M with its chat template');
  await deployGeneration(`${USER}/gemma-chat`, 'gemma-chat');
  await shot('generation-endpoint');
  // The chat view, labelled, instead of the encoders' form.
  assert.equal(await page.$('#playground'), null);
  for (const id of ['chat-system', 'chat-temperature', 'chat-max-tokens', 'chat-input', 'chat-raw']) {
    assert.ok(await page.evaluate((i) => document.getElementById(i).labels.length > 0, id), `#${id} has a label`);
  }
  assert.match(await page.textContent('#sn-openai'), new RegExp(`base_url="${HUB}/endpoints/${USER}/gemma-chat/v1"`));
  assert.match(await page.textContent('#sn-curl'), /\/v1\/chat\/completions/);

  // A reply streams: the bubble's text grows across several observations
  // while it is still streaming, before it is done.
  await recordBubble();
  await page.fill('#chat-system', 'You are a helpful assistant.');
  await chatSend('Count from one to twenty in words.', { maxTokens: '48' });
  await page.waitForSelector('#chat-log .msg-assistant[data-state="done"]', { timeout: 180_000 });
  const seen = await page.evaluate(() => window.__bubble);
  const streaming = [...new Set(seen.filter((o) => o.state === 'streaming' && o.len > 0).map((o) => o.len))];
  assert.ok(streaming.length >= 2, `text grew while streaming (lengths seen: ${streaming})`);
  const reply = await page.textContent('#chat-log .msg-assistant .msg-text');
  assert.ok(reply.length >= Math.max(...streaming), 'the final text holds everything streamed');
  assert.equal(await page.getAttribute('#chat-log .msg-assistant .msg-text', 'aria-live'), 'polite');
  assert.equal(await page.getAttribute('#chat-log .msg-assistant .msg-text', 'aria-busy'), 'false');
  // Usage from the stream's last chunk (include_usage), and the time to first token.
  const prompt = Number(await page.getAttribute('#chat-usage', 'data-prompt-tokens'));
  const completion = Number(await page.getAttribute('#chat-usage', 'data-completion-tokens'));
  assert.ok(prompt > 10, `prompt tokens counted with the system prompt and template: ${prompt}`);
  assert.ok(completion >= streaming.length && completion <= 48, `completion tokens: ${completion}`);
  assert.match(await page.getAttribute('#chat-usage', 'data-ttft-ms') || '', /^\d+$/, 'time to first token shown');
  assert.match(await page.textContent('#chat-usage'), /\d+ prompt tokens · \d+ completion tokens · first token after \d+ ms/);
  await shot('chat-streamed');

  // A second turn carries the first: without the history its prompt would be
  // shorter than the first one's; with it, longer.
  await chatSend('Thank you.', { maxTokens: '8' });
  await page.waitForSelector('#chat-log .msg-assistant:nth-of-type(4)[data-state="done"], #chat-log .msg-error', { timeout: 120_000 });
  assert.equal(await page.$('#chat-log .msg-error'), null, 'no error on the second turn');
  const prompt2 = Number(await page.getAttribute('#chat-usage', 'data-prompt-tokens'));
  assert.ok(prompt2 > prompt, `the history is sent: ${prompt2} > ${prompt}`);

  // Stop aborts a long generation (raw completion of an endless count):
  // the bubble stops growing, the page can send again.
  await page.click('#chat-clear');
  await recordBubble();
  await chatSend('1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', { raw: true, maxTokens: '4000' });
  await page.waitForFunction(() => {
    const b = document.querySelector('#chat-log .msg-assistant');
    return b && b.querySelector('.msg-text').textContent.length >= 12;
  }, null, { timeout: 120_000 });
  assert.equal(await page.isEnabled('#chat-stop'), true);
  await page.click('#chat-stop');
  await page.waitForSelector('#chat-log .msg-assistant[data-state="stopped"]', { timeout: 10_000 });
  const atStop = (await page.textContent('#chat-log .msg-assistant .msg-text')).length;
  await page.waitForTimeout(1500);
  assert.equal((await page.textContent('#chat-log .msg-assistant .msg-text')).length, atStop, 'nothing arrives after Stop');
  assert.ok(atStop < 4000, 'stopped long before max tokens');
  assert.equal(await page.textContent('#chat-status'), 'Stopped.');
  assert.equal(await page.isEnabled('#chat-send'), true);
  assert.equal(await page.isEnabled('#chat-stop'), false);
  await shot('chat-stopped');
  // The endpoint serves the next request (the aborted one freed its slot).
  await chatSend('The capital of France is', { raw: true, maxTokens: '8' });
  await page.waitForSelector('#chat-log .msg-assistant[data-state="done"]', { timeout: 120_000 });
  assert.ok((await page.textContent('#chat-log .msg-assistant[data-state="done"] .msg-text')).length > 0);

  // The charts count prompt and completion tokens apart (gateway usage is
  // written in batches: reload until it shows).
  let completionTotal = 0;
  for (let i = 0; i < 50 && completionTotal === 0; i++) {
    await page.goto(`${HUB}/inference/${USER}/gemma-chat`);
    completionTotal = Number(await page.textContent('#total-completion-tokens'));
    if (completionTotal === 0) await page.waitForTimeout(200);
  }
  const promptTotal = Number(await page.textContent('#total-prompt-tokens'));
  assert.ok(completionTotal >= completion, `completion tokens charted: ${completionTotal}`);
  assert.ok(promptTotal >= prompt + prompt2, `prompt tokens charted: ${promptTotal}`);
  assert.equal(Number(await page.textContent('#total-tokens')), promptTotal + completionTotal);
  assert.match(await page.textContent('#tokens-chart svg'), /completion tokens/);
  await shot('chat-usage-charts');
  // The list shows the task.
  await page.goto(`${HUB}/inference`);
  assert.match(await page.textContent(`[data-endpoint="${USER}/gemma-chat"]`), /text-generation/);
  await shot('endpoints-with-generation');
});

test('chat errors show in the chat: a model without a chat template answers 400, raw completion still works', { timeout: 900_000, skip: NO_GEMMA }, async () => {
  // The same GGUF (the hub already has its bytes) without chat_template.jinja.
  const card = '---\npipeline_tag: text-generation\n---\n# Gemma 3 270M base\n';
  await pushRepo(`${USER}/gemma-base`, [
    { path: 'README.md', content: card },
    { path: 'gemma-3-270m-q4_k_m.gguf', file: GEMMA },
  ], 'Gemma 3 270M, no chat template');
  await deployGeneration(`${USER}/gemma-base`, 'gemma-base');
  await chatSend('Hello?');
  const err = page.locator('#chat-log .msg-error');
  await err.waitFor({ timeout: 120_000 });
  assert.equal(await err.getAttribute('data-status'), '400');
  assert.equal(await err.getAttribute('data-code'), 'no_chat_template');
  assert.equal(await err.getAttribute('role'), 'alert');
  assert.match(await err.textContent(), /HTTP 400 \(no_chat_template\): \S/);
  assert.equal(await page.$('#chat-log .msg-assistant'), null, 'no empty reply bubble');
  assert.equal(await page.isEnabled('#chat-send'), true);
  await shot('chat-error');
  // Raw completion needs no template.
  await chatSend('The capital of France is', { raw: true, maxTokens: '12' });
  await page.waitForSelector('#chat-log .msg-assistant[data-state="done"]', { timeout: 120_000 });
  assert.ok((await page.textContent('#chat-log .msg-assistant .msg-text')).trim().length > 0);
  // Free the model's memory for what follows.
  assert.equal((await hubApi('DELETE', `/api/v1/endpoints/${USER}/gemma-base`)).status < 300, true);
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
