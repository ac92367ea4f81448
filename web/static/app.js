// Paddock dashboard: small progressive enhancement. Pages are server-rendered;
// this file wires copy buttons, snippet tabs, auto-submitting filters, the
// revision picker, and forms that call the JSON API with the session's CSRF
// token (X-CSRF-Token). No inline handlers: the CSP forbids them.
(function () {
  'use strict';

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    var t = m ? m.getAttribute('content') : '';
    if (!t) {
      var c = document.cookie.split('; ').find(function (x) { return x.indexOf('paddock_csrf=') === 0; });
      if (c) t = decodeURIComponent(c.split('=')[1]);
    }
    return t || '';
  }

  /** fetch() to the hub's API: same origin, JSON, CSRF header. Resolves to {ok, status, data}. */
  async function api(method, url, body, extraHeaders) {
    var headers = { 'Accept': 'application/json' };
    var t = csrf();
    if (t) headers['X-CSRF-Token'] = t;
    if (body !== undefined && !(body instanceof Blob)) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(body);
    }
    Object.assign(headers, extraHeaders || {});
    var r = await fetch(url, { method: method, headers: headers, body: body, credentials: 'same-origin' });
    var data = null;
    var text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    return { ok: r.ok, status: r.status, data: data, headers: r.headers };
  }

  function clearErrors(form) {
    form.querySelectorAll('[data-error-for]').forEach(function (el) { el.hidden = true; el.textContent = ''; });
    form.querySelectorAll('[aria-invalid]').forEach(function (el) { el.removeAttribute('aria-invalid'); });
    var box = form.querySelector('.form-error');
    if (box) { box.hidden = true; box.textContent = ''; }
  }

  /** Shows an error next to the field it concerns (or at the top of the form). */
  function showError(form, field, message) {
    var el = field && form.querySelector('[data-error-for="' + field + '"]');
    if (el) {
      el.textContent = message;
      el.hidden = false;
      var input = form.querySelector('[name="' + field + '"]');
      if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
      return;
    }
    var box = form.querySelector('.form-error');
    if (box) { box.textContent = message; box.hidden = false; box.focus && box.focus(); }
  }

  function errorMessage(res) {
    if (res.data && res.data.error) return res.data.error;
    if (res.status === 401) return 'Your session has ended: sign in again.';
    if (res.status === 403) return 'You are not allowed to do that.';
    return 'The request failed (HTTP ' + res.status + ').';
  }

  /** Which field a server error belongs to, from its code and message. */
  function fieldFor(res, map) {
    var code = res.data && res.data.code;
    var msg = (res.data && res.data.error) || '';
    if (map[code]) return map[code];
    for (var key in map) { if (msg.toLowerCase().indexOf(key) >= 0) return map[key]; }
    return null;
  }

  function flash(btn, text) {
    var old = btn.textContent;
    btn.textContent = text;
    setTimeout(function () { btn.textContent = old; }, 1500);
  }

  async function copyText(text, btn) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      var ta = document.createElement('textarea');
      ta.value = text; document.body.appendChild(ta); ta.select();
      try { document.execCommand('copy'); } catch (e2) { /* ignore */ }
      ta.remove();
    }
    if (btn) flash(btn, 'Copied');
  }

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest('[data-copy]');
    if (b) { copyText(b.getAttribute('data-copy'), b); return; }
    b = ev.target.closest('[data-copy-from]');
    if (b) {
      var src = document.getElementById(b.getAttribute('data-copy-from'));
      if (src) copyText((src.querySelector('code') || src).textContent, b);
      return;
    }
    b = ev.target.closest('[data-logout]');
    if (b) {
      api('POST', '/api/v1/auth/logout').then(function () { location.href = '/'; });
    }
  });

  // Snippet tabs (WAI-ARIA tabs: arrows move between tabs).
  document.querySelectorAll('[role="tablist"]').forEach(function (list) {
    var tabs = Array.prototype.slice.call(list.querySelectorAll('[role="tab"]'));
    function select(tab) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute('aria-selected', on ? 'true' : 'false');
        t.tabIndex = on ? 0 : -1;
        var panel = document.getElementById(t.getAttribute('aria-controls'));
        if (panel) panel.hidden = !on;
      });
      tab.focus();
    }
    tabs.forEach(function (t, i) {
      t.addEventListener('click', function () { select(t); });
      t.addEventListener('keydown', function (e) {
        if (e.key === 'ArrowRight') select(tabs[(i + 1) % tabs.length]);
        if (e.key === 'ArrowLeft') select(tabs[(i - 1 + tabs.length) % tabs.length]);
      });
    });
  });

  // Filters and sort apply on change.
  document.querySelectorAll('form[data-autosubmit]').forEach(function (f) {
    f.querySelectorAll('select').forEach(function (s) { s.addEventListener('change', function () { f.submit(); }); });
    f.querySelectorAll('.js-hide').forEach(function (b) { b.hidden = true; });
  });

  // Revision picker: navigate to the same view at the chosen revision.
  document.querySelectorAll('form[data-rev-picker]').forEach(function (f) {
    var sel = f.querySelector('select');
    f.querySelectorAll('.js-hide').forEach(function (b) { b.hidden = true; });
    sel.addEventListener('change', function () {
      var action = f.getAttribute('action');
      location.href = action + '/' + encodeURIComponent(sel.value);
    });
  });

  var handlers = {};

  handlers['new-repo'] = async function (form) {
    var owner = form.owner.value;
    var isOrg = form.owner.selectedOptions[0].getAttribute('data-org') === 'true';
    var name = form.name.value.trim();
    if (!name) return showError(form, 'name', 'Give the repository a name.');
    if (!/^[A-Za-z0-9._-]+$/.test(name)) return showError(form, 'name', 'Use only letters, digits, -, _ and .');
    var body = { name: name, type: form.querySelector('[name=type]:checked').value,
      private: form.querySelector('[name=visibility]:checked').value === 'private' };
    if (isOrg) body.organization = owner;
    var res = await api('POST', '/api/repos/create', body);
    if (!res.ok) return showError(form, fieldFor(res, { invalid_repo_name: 'name', conflict: 'name' }), errorMessage(res));
    var u = new URL(res.data.url, location.href);
    location.href = u.pathname + '/upload';
  };

  function repoApiPath(root) {
    return '/api/' + root.getAttribute('data-plural') + '/' + root.getAttribute('data-repo');
  }

  async function saveSettings(form, body) {
    var root = form.closest('[data-plural]');
    var status = form.querySelector('.status-text');
    var res = await api('PUT', repoApiPath(root) + '/settings', body);
    if (!res.ok) return showError(form, null, errorMessage(res));
    if (status) status.textContent = 'Saved.';
  }

  handlers['visibility'] = function (form) {
    return saveSettings(form, { private: form.querySelector('[name=visibility]:checked').value === 'private' });
  };
  handlers['gating'] = function (form) {
    var v = form.gated.value;
    return saveSettings(form, { gated: v === 'off' ? false : v });
  };
  handlers['delete-repo'] = async function (form) {
    if (form.confirm.value.trim() !== form.getAttribute('data-confirm')) {
      return showError(form, 'confirm', 'Type ' + form.getAttribute('data-confirm') + ' exactly to confirm.');
    }
    var body = { name: form.getAttribute('data-name'), type: form.getAttribute('data-kind') };
    var ns = form.getAttribute('data-namespace');
    if (form.getAttribute('data-confirm').indexOf('/') >= 0) body.organization = ns;
    var res = await api('DELETE', '/api/repos/delete', body);
    if (!res.ok) return showError(form, null, errorMessage(res));
    location.href = '/';
  };

  handlers['new-discussion'] = async function (form) {
    var title = form.title.value.trim();
    if (!title) return showError(form, 'title', 'Give the discussion a title.');
    var res = await api('POST', form.getAttribute('data-api') + '/discussions', { title: title, description: form.description.value });
    if (!res.ok) return showError(form, null, errorMessage(res));
    location.href = form.getAttribute('data-url') + '/discussions/' + res.data.num;
  };
  handlers['comment'] = async function (form) {
    var text = form.comment.value.trim();
    if (!text) return showError(form, 'comment', 'Write a comment first.');
    var res = await api('POST', form.getAttribute('data-api') + '/comment', { comment: text });
    if (!res.ok) return showError(form, null, errorMessage(res));
    location.reload();
  };
  handlers['discussion-action'] = async function (form, submitter) {
    var action = submitter ? submitter.value : 'closed';
    var res = action === 'merge'
      ? await api('POST', form.getAttribute('data-api') + '/merge', {})
      : await api('POST', form.getAttribute('data-api') + '/status', { status: action });
    if (!res.ok) return showError(form, null, errorMessage(res));
    location.reload();
  };

  handlers['login'] = async function (form) {
    if (!form.username.value) return showError(form, 'username', 'Enter your user name.');
    if (!form.password.value) return showError(form, 'password', 'Enter your password.');
    var res = await api('POST', '/api/v1/auth/login', { username: form.username.value, password: form.password.value });
    if (!res.ok) return showError(form, res.status === 401 ? 'password' : null, errorMessage(res));
    location.href = form.getAttribute('data-next') || '/';
  };

  handlers['create-token'] = async function (form) {
    var name = form.name.value.trim();
    if (!name) return showError(form, 'name', 'Give the token a name, e.g. where it will be used.');
    var scopes = Array.prototype.map.call(form.querySelectorAll('[name=scopes]:checked'), function (c) { return c.value; });
    if (!scopes.length) return showError(form, 'scopes', 'Pick at least one scope.');
    var body = { name: name, scopes: scopes };
    if (form.expires_in_days.value) body.expires_in_days = parseInt(form.expires_in_days.value, 10);
    var ns = form.namespaces.value.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
    if (ns.length) body.namespaces = ns;
    var res = await api('POST', '/api/v1/tokens', body);
    if (!res.ok) return showError(form, fieldFor(res, { scope: 'scopes', expires: 'expires_in_days', namespace: 'namespaces', name: 'name' }), errorMessage(res));
    var box = document.getElementById('new-secret');
    document.getElementById('secret-value').textContent = res.data.secret;
    box.hidden = false;
    form.reset();
    var t = res.data.token;
    var table = document.getElementById('token-table');
    if (table) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-token-id', t.id);
      [t.name, t.prefix + '…', t.scopes.join(', '), 'just now', 'never', t.expires_at || 'never'].forEach(function (v, i) {
        var td = document.createElement('td');
        if (i === 1) { var c = document.createElement('code'); c.textContent = v; td.appendChild(c); } else td.textContent = v;
        if (i === 3) td.className = 'hide-narrow';
        tr.appendChild(td);
      });
      var td = document.createElement('td');
      var b = document.createElement('button');
      b.type = 'button'; b.className = 'small danger'; b.textContent = 'Revoke';
      b.setAttribute('data-revoke', t.id); b.setAttribute('data-name', t.name);
      td.appendChild(b); tr.appendChild(td);
      table.querySelector('tbody').appendChild(tr);
    } else {
      setTimeout(function () { location.reload(); }, 0);
    }
  };

  document.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-revoke]');
    if (!b) return;
    if (!confirm('Revoke the token "' + b.getAttribute('data-name') + '"? Programs using it will stop working.')) return;
    var res = await api('DELETE', '/api/v1/tokens/' + b.getAttribute('data-revoke'));
    if (res.ok || res.status === 404) {
      var tr = b.closest('tr');
      tr.remove();
    } else {
      alert(errorMessage(res));
    }
  });

  // Webhook deliveries: send one again (a new delivery of the same event).
  document.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-redeliver]');
    if (!b) return;
    var table = b.closest('[data-deliveries-api]');
    b.disabled = true;
    var res = await api('POST', table.getAttribute('data-deliveries-api') + '/' + encodeURIComponent(b.getAttribute('data-redeliver')) + '/redeliver');
    if (!res.ok) { b.disabled = false; alert(errorMessage(res)); return; }
    setTimeout(function () { location.reload(); }, 0);
  });

  // Access requests: approve / reject.
  document.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-decide]');
    if (!b) return;
    var table = b.closest('[data-requests-api]');
    var res = await api('PUT', table.getAttribute('data-requests-api') + '/' + encodeURIComponent(b.getAttribute('data-user')),
      { status: b.getAttribute('data-decide') });
    if (!res.ok) { alert(errorMessage(res)); return; }
    b.closest('tr').querySelector('.req-status').textContent = b.getAttribute('data-decide');
  });

  // Organization members.
  handlers['invite'] = async function (form) {
    var user = form.user.value.trim();
    if (!user) return showError(form, 'user', 'Enter the user name to add.');
    var org = form.getAttribute('data-org');
    var res = await api('POST', '/api/v1/orgs/' + encodeURIComponent(org) + '/members', { user: user, role: form.role.value });
    if (!res.ok) return showError(form, res.status === 404 || res.status === 409 ? 'user' : null, errorMessage(res));
    location.reload();
  };
  document.addEventListener('change', async function (ev) {
    var s = ev.target.closest('[data-member-role]');
    if (!s) return;
    var org = s.closest('[data-org]').getAttribute('data-org');
    var res = await api('PATCH', '/api/v1/orgs/' + encodeURIComponent(org) + '/members/' + encodeURIComponent(s.getAttribute('data-member-role')), { role: s.value });
    if (!res.ok) { alert(errorMessage(res)); location.reload(); }
  });
  document.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-remove-member]');
    if (!b) return;
    var user = b.getAttribute('data-remove-member');
    if (!confirm('Remove ' + user + ' from the organization?')) return;
    var org = b.closest('[data-org]').getAttribute('data-org');
    var res = await api('DELETE', '/api/v1/orgs/' + encodeURIComponent(org) + '/members/' + encodeURIComponent(user));
    if (!res.ok) { alert(errorMessage(res)); return; }
    b.closest('tr').remove();
  });

  // Deploy an endpoint.
  handlers['deploy'] = async function (form) {
    var name = form.name.value.trim();
    if (!name) return showError(form, 'name', 'Give the endpoint a name.');
    if (!form.repository.value.trim()) return showError(form, 'repository', 'Which model should it serve?');
    var body = {
      name: name, repository: form.repository.value.trim(), revision: form.revision.value, task: form.task.value,
      precision: form.precision.value,
      min_replicas: parseInt(form.min_replicas.value, 10), max_replicas: parseInt(form.max_replicas.value, 10),
      access: form.querySelector('[name=access]:checked').value
    };
    if (form.scale_to_zero_after_s.value) body.scale_to_zero_after_s = parseInt(form.scale_to_zero_after_s.value, 10);
    var ns = form.namespace.value;
    var res = await api('POST', '/api/v1/endpoints/' + encodeURIComponent(ns), body);
    if (!res.ok) {
      return showError(form, fieldFor(res, { conflict: 'name', repo_not_found: 'repository', invalid_repo_name: 'repository',
        'endpoint name': 'name', task: 'task', precision: 'precision', replicas: 'scaling', scale_to_zero: 'scaling' }), errorMessage(res));
    }
    location.href = '/inference/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name);
  };

  // Queue a fine-tuning job.
  handlers['new-job'] = async function (form) {
    var ns = form.namespace.value;
    var need = { base_model: 'Which model should it start from?', dataset: 'Which dataset should it train on?',
      output_repo: 'Name the model repo the result goes to.' };
    for (var k in need) { if (!form[k].value.trim()) return showError(form, k, need[k]); }
    var num = function (name, parse) { var v = form[name].value; return v === '' ? undefined : parse(v); };
    var body = {
      task: form.task.value, base_model: form.base_model.value.trim(), dataset: form.dataset.value.trim(),
      output_repo: form.output_repo.value.trim(),
      hyperparameters: {
        epochs: num('epochs', Number), learning_rate: num('learning_rate', Number),
        batch_size: num('batch_size', Number), max_seq_length: num('max_seq_length', Number)
      },
      max_wall_seconds: num('max_wall_seconds', Number)
    };
    if (body.task === 'causal-lm-lora') {
      body.hyperparameters.lora_rank = num('lora_rank', Number);
      body.hyperparameters.lora_alpha = num('lora_alpha', Number);
      var targets = form.lora_targets.value.split(',').map(function (t) { return t.trim(); }).filter(Boolean);
      if (targets.length) body.hyperparameters.lora_targets = targets;
    }
    if (form.base_revision.value.trim()) body.base_revision = form.base_revision.value.trim();
    if (form.dataset_revision.value.trim()) body.dataset_revision = form.dataset_revision.value.trim();
    var res = await api('POST', '/api/v1/jobs/' + encodeURIComponent(ns), body);
    if (!res.ok) {
      return showError(form, fieldFor(res, { 'hyperparameters': 'hyperparameters', 'max_wall_seconds': 'hyperparameters',
        'output_repo': 'output_repo', 'base_model': 'base_model', 'dataset': 'dataset', 'task': 'task' }), errorMessage(res));
    }
    location.href = '/jobs/' + encodeURIComponent(ns) + '/' + encodeURIComponent(res.data.id);
  };

  // The new-job form: LoRA fields only for LoRA jobs, and each task's default learning
  // rate until the user sets one.
  var taskDefaults = { 'causal-lm-lora': '0.0002' };
  document.addEventListener('change', function (ev) {
    var sel = ev.target;
    if (sel.name !== 'task' || !sel.form || sel.form.getAttribute('data-form') !== 'new-job') return;
    var form = sel.form;
    form.querySelectorAll('[data-for-task]').forEach(function (el) {
      el.hidden = el.getAttribute('data-for-task') !== sel.value;
    });
    var lr = form.learning_rate;
    if (!lr.dataset.touched) lr.value = taskDefaults[sel.value] || '0.00005';
  });
  document.addEventListener('input', function (ev) {
    if (ev.target.name === 'learning_rate') ev.target.dataset.touched = '1';
  });

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    var h = handlers[form.getAttribute('data-form')];
    if (!h) return;
    ev.preventDefault();
    clearErrors(form);
    var btn = form.querySelector('button[type=submit]');
    if (btn) btn.disabled = true;
    Promise.resolve(h(form, ev.submitter)).catch(function (e) { showError(form, null, String(e)); })
      .finally(function () { if (btn) btn.disabled = false; });
  });

  window.Paddock = { api: api, csrf: csrf, showError: showError, clearErrors: clearErrors, errorMessage: errorMessage };
})();
