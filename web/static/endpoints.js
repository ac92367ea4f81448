// Endpoint pages: live status, replicas and status history (polls the
// management API without reloading),
// pause/resume/delete, and the encoders' playground, which calls the endpoint
// through the gateway with the HF task API ({"inputs": ...}). A
// text-generation endpoint has a chat instead (chat.js).
(function () {
  'use strict';
  var P = window.Paddock;
  var POLL_MS = 3000;

  function setStatus(el, status) {
    if (!el || el.textContent === status) return;
    el.textContent = status;
    el.className = el.className.replace(/status-\S+/, 'status-' + status);
  }

  // The list: each namespace shown, page by page (the API serves at most
  // 100 per page).
  var list = document.querySelector('[data-endpoint-list]');
  if (list) {
    var nss = (list.getAttribute('data-namespaces') || '').split(',').filter(Boolean);
    var update = function (e) {
      var row = list.querySelector('[data-endpoint="' + e.namespace + '/' + e.name + '"]');
      if (!row) return;
      setStatus(row.querySelector('[data-field="status"]'), e.status);
      var rep = row.querySelector('[data-field="replicas"]');
      if (rep) rep.textContent = e.replicas.running + ' of ' + e.replicas.target + ' running';
    };
    var tick = async function () {
      for (var i = 0; i < nss.length; i++) {
        var cursor = null;
        do {
          var res = await P.api('GET', '/api/v1/endpoints/' + encodeURIComponent(nss[i]) + '?limit=100'
            + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
          if (!res.ok) break;
          res.data.items.forEach(update);
          cursor = res.data.next_cursor;
        } while (cursor);
      }
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  var page = document.querySelector('[data-endpoint-page]');
  if (!page) return;
  var ns = page.getAttribute('data-namespace');
  var name = page.getAttribute('data-name');
  var task = page.getAttribute('data-task');
  var apiUrl = '/api/v1/endpoints/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name);

  // "just now", "3 minutes ago": the wording of the server's text::ago.
  function ago(iso) {
    var s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 45) return 'just now';
    // [below, unit seconds, rounding offset, name]
    var steps = [[3600, 60, 30, 'minute'], [86400, 3600, 1800, 'hour'], [2592000, 86400, 43200, 'day'],
      [31536000, 2592000, 0, 'month'], [Infinity, 31536000, 0, 'year']];
    var st = steps.find(function (x) { return s < x[0]; });
    var n = Math.floor((s + st[2]) / st[1]), unit = st[3];
    n = Math.max(n, 1);
    return n + ' ' + unit + (n === 1 ? '' : 's') + ' ago';
  }

  function pill(status) {
    var s = document.createElement('span');
    s.className = 'status status-' + status;
    s.textContent = status;
    return s;
  }

  // Redraws a list when what it shows has changed.
  var drawn = {};
  function redraw(id, items, build) {
    var box = document.getElementById(id);
    var key = JSON.stringify(items);
    if (!box || drawn[id] === key) return;
    drawn[id] = key;
    box.textContent = '';
    build(box);
  }

  function showReplicas(items) {
    redraw('ep-replicas', items, function (box) {
      if (!items.length) {
        var p = document.createElement('p'); p.className = 'muted'; p.textContent = 'None running.';
        box.appendChild(p);
        return;
      }
      var ul = document.createElement('ul'); ul.className = 'plain';
      items.forEach(function (r) {
        var li = document.createElement('li');
        li.appendChild(pill(r.status));
        li.appendChild(document.createTextNode(' ' + (r.message || '')));
        ul.appendChild(li);
      });
      box.appendChild(ul);
    });
  }

  function showEvents(events) {
    redraw('ep-events', events.map(function (ev) { return [ev.at, ev.status, ev.message, ago(ev.at)]; }), function (ol) {
      events.forEach(function (ev) {
        var li = document.createElement('li');
        li.appendChild(pill(ev.status));
        var t = document.createElement('time');
        t.setAttribute('datetime', ev.at);
        t.textContent = ago(ev.at);
        li.appendChild(document.createTextNode(' '));
        li.appendChild(t);
        if (ev.message) {
          li.appendChild(document.createElement('br'));
          var m = document.createElement('span'); m.className = 'muted'; m.textContent = ev.message;
          li.appendChild(m);
        }
        ol.appendChild(li);
      });
    });
  }

  async function poll() {
    var res = await P.api('GET', apiUrl);
    if (!res.ok) return;
    setStatus(document.getElementById('ep-status'), res.data.status);
    document.getElementById('ep-message').textContent = res.data.message || '';
    showReplicas(res.data.replicas.items);
    showEvents(res.data.events);
  }
  setInterval(poll, POLL_MS);

  page.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-ep-action]');
    if (!b) return;
    var action = b.getAttribute('data-ep-action');
    if (action === 'delete') {
      if (!confirm('Delete the endpoint ' + ns + '/' + name + '?')) return;
      var d = await P.api('DELETE', apiUrl);
      if (!d.ok) return alert(P.errorMessage(d));
      location.href = '/inference/' + encodeURIComponent(ns);
      return;
    }
    var res = await P.api('POST', apiUrl + '/' + action);
    if (!res.ok) return alert(P.errorMessage(res));
    poll();
  });

  var form = document.getElementById('playground');
  var out = document.getElementById('play-result');
  if (!form) return;

  function table(rows, headers) {
    var t = document.createElement('table');
    t.className = 'result-table';
    var thead = document.createElement('thead');
    var tr = document.createElement('tr');
    headers.forEach(function (h) { var th = document.createElement('th'); th.scope = 'col'; th.textContent = h; tr.appendChild(th); });
    thead.appendChild(tr); t.appendChild(thead);
    var tb = document.createElement('tbody');
    rows.forEach(function (r) {
      var tr2 = document.createElement('tr');
      r.forEach(function (c, i) {
        var td = document.createElement('td');
        if (i === r.length - 1 && typeof c === 'number') {
          var m = document.createElement('meter'); m.min = 0; m.max = 1; m.value = Math.max(0, c);
          td.appendChild(m); td.appendChild(document.createTextNode(' ' + c.toFixed(4)));
        } else td.textContent = c;
        tr2.appendChild(td);
      });
      tb.appendChild(tr2);
    });
    t.appendChild(tb);
    return t;
  }

  function render(data) {
    out.textContent = '';
    if (task === 'text-classification') {
      var labels = Array.isArray(data[0]) ? data[0] : data;
      out.appendChild(table(labels.map(function (l) { return [l.label, l.score]; }), ['Label', 'Score']));
    } else if (task === 'sentence-similarity') {
      var others = document.getElementById('play-others').value.split('\n').filter(Boolean);
      out.appendChild(table(data.map(function (s, i) { return [others[i] || '#' + i, s]; }), ['Sentence', 'Similarity']));
    } else {
      var vec = data;
      while (Array.isArray(vec) && Array.isArray(vec[0])) vec = vec[0];
      var p = document.createElement('p');
      p.textContent = 'Embedding with ' + vec.length + ' dimensions:';
      var pre = document.createElement('pre');
      pre.className = 'embedding';
      pre.textContent = '[' + vec.slice(0, 16).map(function (x) { return x.toFixed(5); }).join(', ') + (vec.length > 16 ? ', …' : '') + ']';
      out.appendChild(p); out.appendChild(pre);
    }
    out.setAttribute('data-done', 'true');
  }

  form.addEventListener('submit', async function (ev) {
    ev.preventDefault();
    P.clearErrors(form);
    var text = document.getElementById('play-input').value;
    if (!text.trim()) return P.showError(form, null, 'Type some text first.');
    var body = { inputs: text };
    if (task === 'sentence-similarity') {
      body = { inputs: { source_sentence: text, sentences: document.getElementById('play-others').value.split('\n').filter(Boolean) } };
    }
    var st = document.getElementById('play-status');
    st.textContent = 'Running… (a scaled-to-zero endpoint wakes up first)';
    var t0 = performance.now();
    var res = await P.api('POST', page.getAttribute('data-url'), body);
    if (!res.ok) { st.textContent = ''; return P.showError(form, null, P.errorMessage(res)); }
    st.textContent = 'Done in ' + Math.round(performance.now() - t0) + ' ms.';
    render(res.data);
  });
})();
