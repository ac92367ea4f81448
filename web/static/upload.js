// Upload files and folders from the browser through the hub's public API,
// the way huggingface_hub does: preupload decides regular or LFS per file;
// LFS files are hashed incrementally (sha256.js over File.slice chunks, never
// the whole file in memory), announced with the LFS batch API, sent in parts
// (multipart above the hub's threshold; each part retried), completed and
// verified; then one NDJSON commit adds everything. Nothing is committed
// unless every file verified.
(function () {
  'use strict';
  var root = document.getElementById('upload');
  if (!root) return;
  var P = window.Paddock;
  var form = document.getElementById('upload-form');
  var tbody = document.querySelector('#upload-list tbody');
  var items = [];
  var busy = false;
  var PARALLEL_PARTS = 3;
  var RETRIES = 4;

  function fmtSize(n) {
    var u = ['Bytes', 'kB', 'MB', 'GB', 'TB'], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 2 : 1) : n) + ' ' + u[i];
  }

  function prefix() {
    var p = form.prefix.value.trim().replace(/^\/+|\/+$/g, '');
    return p ? p + '/' : '';
  }

  function add(file, relPath) {
    var existing = items.findIndex(function (it) { return it.rel === relPath; });
    if (existing >= 0) { items[existing].row.remove(); items.splice(existing, 1); }
    var tr = document.createElement('tr');
    var name = document.createElement('td'); name.textContent = relPath; name.className = 'path';
    var size = document.createElement('td'); size.textContent = fmtSize(file.size); size.className = 'num';
    var prog = document.createElement('td');
    var bar = document.createElement('progress'); bar.max = 100; bar.value = 0;
    bar.setAttribute('aria-label', 'Progress of ' + relPath);
    var st = document.createElement('span'); st.className = 'file-status'; st.textContent = 'ready';
    prog.appendChild(bar); prog.appendChild(st);
    var rm = document.createElement('td');
    var b = document.createElement('button'); b.type = 'button'; b.className = 'small secondary'; b.textContent = 'Remove';
    b.setAttribute('aria-label', 'Remove ' + relPath);
    rm.appendChild(b);
    tr.appendChild(name); tr.appendChild(size); tr.appendChild(prog); tr.appendChild(rm);
    tbody.appendChild(tr);
    var it = { file: file, rel: relPath, row: tr, bar: bar, st: st, hashed: 0, sent: 0, lfs: false, done: false };
    b.addEventListener('click', function () {
      if (busy) return;
      tr.remove(); items.splice(items.indexOf(it), 1); refresh();
    });
    items.push(it);
    refresh();
  }

  function refresh() {
    document.getElementById('upload-list').hidden = items.length === 0;
    document.getElementById('overall').hidden = items.length === 0;
    updateOverall();
  }

  function fileProgress(it) {
    if (it.done) return 1;
    var size = Math.max(it.file.size, 1);
    if (it.lfs) return (0.25 * it.hashed + 0.75 * it.sent) / size;
    return it.sent / size;
  }

  function setRow(it, text) {
    it.bar.value = Math.floor(fileProgress(it) * 100);
    if (text !== undefined) it.st.textContent = text;
    updateOverall();
  }

  function updateOverall() {
    var total = 0, done = 0;
    items.forEach(function (it) { var w = Math.max(it.file.size, 1); total += w; done += w * fileProgress(it); });
    var pct = total ? Math.floor(100 * done / total) : 0;
    var bar = document.getElementById('overall-bar');
    bar.value = pct; bar.textContent = pct + '%';
    document.getElementById('overall-text').textContent = pct + '%';
  }

  // ---- choosing files ----
  document.getElementById('pick-files').addEventListener('change', function (e) {
    Array.prototype.forEach.call(e.target.files, function (f) { add(f, f.name); });
    e.target.value = '';
  });
  document.getElementById('pick-folder').addEventListener('change', function (e) {
    Array.prototype.forEach.call(e.target.files, function (f) {
      var rel = f.webkitRelativePath || f.name;
      var cut = rel.indexOf('/');
      add(f, cut >= 0 ? rel.slice(cut + 1) : rel); // the folder's contents
    });
    e.target.value = '';
  });

  function readAll(reader) {
    return new Promise(function (res, rej) {
      var out = [];
      (function next() {
        reader.readEntries(function (batch) {
          if (!batch.length) return res(out);
          out = out.concat(Array.prototype.slice.call(batch)); next();
        }, rej);
      })();
    });
  }
  async function walk(entry, base) {
    if (entry.isFile) {
      var f = await new Promise(function (res, rej) { entry.file(res, rej); });
      add(f, base + entry.name);
    } else if (entry.isDirectory) {
      var children = await readAll(entry.createReader());
      for (var i = 0; i < children.length; i++) await walk(children[i], base + entry.name + '/');
    }
  }
  var zone = document.getElementById('dropzone');
  ['dragenter', 'dragover'].forEach(function (t) {
    zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.add('over'); });
  });
  zone.addEventListener('dragleave', function () { zone.classList.remove('over'); });
  zone.addEventListener('drop', async function (e) {
    e.preventDefault(); zone.classList.remove('over');
    var entries = Array.prototype.map.call(e.dataTransfer.items || [], function (i) {
      return i.webkitGetAsEntry ? i.webkitGetAsEntry() : null;
    });
    if (entries.length && entries.every(Boolean)) {
      for (var i = 0; i < entries.length; i++) {
        // A dropped folder adds its contents, as the folder picker does.
        if (entries[i].isDirectory) {
          var kids = await readAll(entries[i].createReader());
          for (var k = 0; k < kids.length; k++) await walk(kids[k], '');
        } else await walk(entries[i], '');
      }
    } else {
      Array.prototype.forEach.call(e.dataTransfer.files, function (f) { add(f, f.name); });
    }
  });
  zone.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); document.getElementById('pick-files').click(); }
  });

  // ---- transfer ----
  function b64(bytes) {
    var s = '';
    for (var i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  async function fileB64(file) {
    var url = await new Promise(function (res, rej) {
      var r = new FileReader(); r.onload = function () { res(r.result); }; r.onerror = function () { rej(r.error); };
      r.readAsDataURL(file);
    });
    return url.slice(url.indexOf(',') + 1);
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  /** PUT a blob with upload progress; resolves to the XHR. Signed links need no credentials. */
  function put(url, blob, onProgress) {
    return new Promise(function (res, rej) {
      var x = new XMLHttpRequest();
      x.open('PUT', url);
      x.upload.onprogress = function (e) { onProgress(e.loaded); };
      x.onload = function () { (x.status >= 200 && x.status < 300) ? res(x) : rej(new Error('HTTP ' + x.status + ' ' + (x.responseText || '').slice(0, 200))); };
      x.onerror = function () { rej(new Error('network error')); };
      x.send(blob);
    });
  }

  async function withRetry(what, fn, onRetry) {
    for (var attempt = 1; ; attempt++) {
      try { return await fn(); } catch (e) {
        if (attempt >= RETRIES) throw new Error(what + ' failed after ' + attempt + ' tries: ' + e.message);
        if (onRetry) onRetry(attempt, e);
        await sleep(500 * Math.pow(2, attempt - 1));
      }
    }
  }

  async function uploadLfs(it, branch) {
    it.lfs = true;
    setRow(it, 'hashing');
    it.oid = await window.PaddockSha256.hashBlob(it.file, function (n) {
      it.hashed = n; setRow(it, 'hashing ' + Math.floor(100 * n / Math.max(it.file.size, 1)) + '%');
    });
    it.hashed = it.file.size;
    var res = await P.api('POST', root.getAttribute('data-batch'),
      { operation: 'upload', transfers: ['basic', 'multipart'], hash_algo: 'sha256',
        ref: { name: 'refs/heads/' + branch }, objects: [{ oid: it.oid, size: it.file.size }] },
      { 'Accept': 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json' });
    if (!res.ok) throw new Error(P.errorMessage(res));
    var obj = res.data.objects[0];
    if (obj.error) throw new Error(obj.error.message);
    var actions = obj.actions || {};
    if (!actions.upload) { it.sent = it.file.size; setRow(it, 'already on the hub'); return; }
    var up = actions.upload;
    var header = up.header || {};
    if (header.chunk_size) {
      var chunk = parseInt(header.chunk_size, 10);
      var partNos = Object.keys(header).filter(function (k) { return /^\d+$/.test(k); }).map(Number).sort(function (a, b) { return a - b; });
      var sentPer = {};
      var etags = [];
      var next = 0;
      var finished = 0;
      var total = partNos.length;
      // Parts that needed another try stay named in the status, so a retry
      // is not hidden by the progress of the parts in flight beside it.
      var retried = [];
      var note = function () { return retried.length ? ' · retried part ' + retried.join(', ') : ''; };
      async function worker() {
        while (next < partNos.length) {
          var n = partNos[next++];
          var blob = it.file.slice((n - 1) * chunk, Math.min(n * chunk, it.file.size));
          var x = await withRetry('part ' + n, function () {
            sentPer[n] = 0;
            return put(header[String(n)], blob, function (b) {
              sentPer[n] = b;
              it.sent = Object.keys(sentPer).reduce(function (s, k) { return s + sentPer[k]; }, 0);
              setRow(it, 'uploading part ' + (finished + 1) + ' of ' + total + note());
            });
          }, function (attempt) {
            if (retried.indexOf(n) < 0) retried.push(n);
            setRow(it, 'retrying part ' + n + ' (' + attempt + ')');
          });
          sentPer[n] = blob.size;
          finished++;
          etags.push({ partNumber: n, etag: (x.getResponseHeader('ETag') || '').replace(/"/g, '') });
        }
      }
      var workers = [];
      for (var w = 0; w < Math.min(PARALLEL_PARTS, partNos.length); w++) workers.push(worker());
      await Promise.all(workers);
      etags.sort(function (a, b) { return a.partNumber - b.partNumber; });
      setRow(it, 'joining parts' + note());
      var done = await withRetry('completing the upload', async function () {
        var r = await fetch(up.href, { method: 'POST', credentials: 'omit',
          headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ oid: it.oid, parts: etags }) });
        if (!r.ok) throw new Error('HTTP ' + r.status + ' ' + (await r.text()).slice(0, 200));
        return r;
      });
      void done;
    } else {
      await withRetry('upload', function () {
        return put(up.href, it.file, function (b) { it.sent = b; setRow(it, 'uploading'); });
      }, function (attempt) { setRow(it, 'retrying (' + attempt + ')'); });
    }
    it.sent = it.file.size;
    if (actions.verify) {
      setRow(it, 'verifying');
      var v = await P.api('POST', actions.verify.href, { oid: it.oid, size: it.file.size },
        { 'Accept': 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json' });
      if (!v.ok) throw new Error('verification failed: ' + P.errorMessage(v));
    }
    setRow(it, 'verified');
  }

  async function preupload(list, branch) {
    var api = '/api/' + root.getAttribute('data-plural') + '/' + root.getAttribute('data-repo');
    var modes = {};
    for (var i = 0; i < list.length; i += 100) {
      var batch = list.slice(i, i + 100);
      var files = [];
      for (var j = 0; j < batch.length; j++) {
        var it = batch[j];
        var sample = new Uint8Array(await it.file.slice(0, 512).arrayBuffer());
        files.push({ path: it.path, size: it.file.size, sample: b64(sample) });
      }
      var res = await P.api('POST', api + '/preupload/' + encodeURIComponent(branch), { files: files });
      if (!res.ok) throw new Error(P.errorMessage(res));
      res.data.files.forEach(function (f) { modes[f.path] = f; });
    }
    return modes;
  }

  function commitXhr(url, body, onProgress) {
    return new Promise(function (res, rej) {
      var x = new XMLHttpRequest();
      x.open('POST', url);
      x.setRequestHeader('Content-Type', 'application/x-ndjson');
      x.setRequestHeader('Accept', 'application/json');
      var t = P.csrf(); if (t) x.setRequestHeader('X-CSRF-Token', t);
      x.upload.onprogress = function (e) { onProgress(e.loaded, e.total); };
      x.onload = function () {
        var data = null; try { data = JSON.parse(x.responseText); } catch (e) { data = { error: x.responseText }; }
        res({ ok: x.status >= 200 && x.status < 300, status: x.status, data: data });
      };
      x.onerror = function () { rej(new Error('network error')); };
      x.send(body);
    });
  }

  form.addEventListener('submit', async function (ev) {
    ev.preventDefault();
    if (busy) return;
    P.clearErrors(form);
    var status = document.getElementById('upload-status');
    if (!items.length) return P.showError(form, null, 'Add at least one file.');
    var summary = form.summary.value.trim();
    if (!summary) return P.showError(form, 'summary', 'Write a commit message.');
    var branch = form.branch.value;
    busy = true;
    var btn = document.getElementById('upload-submit');
    btn.disabled = true;
    var pre = prefix();
    items.forEach(function (it) { it.path = pre + it.rel; it.hashed = 0; it.sent = 0; it.done = false; setRow(it, 'waiting'); });
    try {
      status.textContent = 'Checking files…';
      var modes = await preupload(items, branch);
      var keep = items.filter(function (it) {
        var m = modes[it.path];
        if (m && m.shouldIgnore) { it.done = true; setRow(it, 'ignored (.gitignore)'); return false; }
        return true;
      });
      var lfsItems = keep.filter(function (it) { return modes[it.path] && modes[it.path].uploadMode === 'lfs'; });
      var regular = keep.filter(function (it) { return lfsItems.indexOf(it) < 0; });
      for (var i = 0; i < lfsItems.length; i++) {
        status.textContent = 'Uploading large files (' + (i + 1) + ' of ' + lfsItems.length + ')…';
        await uploadLfs(lfsItems[i], branch);
      }
      status.textContent = 'Committing…';
      var parts = [JSON.stringify({ key: 'header', value: { summary: summary, description: form.description.value } }) + '\n'];
      for (var k = 0; k < lfsItems.length; k++) {
        var l = lfsItems[k];
        parts.push(JSON.stringify({ key: 'lfsFile', value: { path: l.path, algo: 'sha256', oid: l.oid, size: l.file.size } }) + '\n');
      }
      for (var r = 0; r < regular.length; r++) {
        setRow(regular[r], 'reading');
        parts.push(JSON.stringify({ key: 'file', value: { path: regular[r].path, content: await fileB64(regular[r].file), encoding: 'base64' } }) + '\n');
      }
      var body = new Blob(parts, { type: 'application/x-ndjson' });
      var url = '/api/' + root.getAttribute('data-plural') + '/' + root.getAttribute('data-repo') + '/commit/' + encodeURIComponent(branch);
      var res = await commitXhr(url, body, function (loaded, total) {
        regular.forEach(function (it) { it.sent = it.file.size * (total ? loaded / total : 1); setRow(it, 'sending'); });
      });
      if (!res.ok) throw new Error(P.errorMessage(res));
      items.forEach(function (it) { it.done = true; setRow(it, 'committed'); });
      var oid = res.data.commitOid || '';
      status.textContent = '';
      var a = document.createElement('a');
      a.href = root.getAttribute('data-url') + '/commit/' + oid;
      a.textContent = 'Committed ' + oid.slice(0, 7) + ': view the commit';
      status.appendChild(a);
      status.setAttribute('data-done', 'true');
    } catch (e) {
      status.textContent = '';
      P.showError(form, null, 'Upload failed, nothing was committed: ' + e.message);
    } finally {
      busy = false;
      btn.disabled = false;
    }
  });
})();
