// A fine-tuning job's page: while the job is queued or running, polls
// GET /api/v1/jobs/{ns}/{id} every 2 s (state, progress, CPU-seconds, error)
// and appends new log lines (GET .../logs?after=); when the job ends the page
// reloads to show its metrics, output commit and Deploy link. The Cancel
// button posts to .../cancel.
(function () {
  'use strict';
  var head = document.querySelector('[data-job-page]');
  if (!head || !window.Paddock) return;
  var P = window.Paddock;
  var base = '/api/v1/jobs/' + encodeURIComponent(head.getAttribute('data-namespace')) + '/' + encodeURIComponent(head.getAttribute('data-id'));
  var lastSeq = parseInt(head.getAttribute('data-last-seq'), 10) || 0;
  var stateEl = document.getElementById('job-state');
  var logs = document.getElementById('job-logs');

  function show(j) {
    stateEl.textContent = j.state;
    stateEl.className = 'status status-' + j.state;
    var p = j.progress || {};
    document.getElementById('job-progress').value = Math.round((p.fraction || 0) * 100);
    document.getElementById('job-steps').textContent = (p.step || 0) + '/' + (p.total_steps || 0) + ' steps';
    document.getElementById('job-cpu').textContent = (j.cpu_seconds || 0).toFixed(1);
    var err = document.getElementById('job-error');
    err.textContent = j.error || '';
    err.hidden = !j.error;
  }

  async function moreLogs() {
    var res = await P.api('GET', base + '/logs?after=' + lastSeq);
    if (!res.ok || !res.data) return;
    var atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    res.data.items.forEach(function (l) {
      var s = document.createElement('span');
      s.setAttribute('data-seq', l.seq);
      s.title = l.at;
      s.textContent = l.line + '\n';
      logs.appendChild(s);
      lastSeq = l.seq;
    });
    if (atEnd) logs.scrollTop = logs.scrollHeight;
  }

  async function poll() {
    var res = await P.api('GET', base);
    if (res.ok && res.data) {
      show(res.data);
      await moreLogs();
      if (res.data.state !== 'queued' && res.data.state !== 'running') {
        setTimeout(function () { location.reload(); }, 0);
        return;
      }
    }
    setTimeout(poll, 2000);
  }

  document.addEventListener('click', async function (ev) {
    var b = ev.target.closest('[data-job-cancel]');
    if (!b) return;
    if (!confirm('Cancel this job? A running job stops within a training step.')) return;
    b.disabled = true;
    var res = await P.api('POST', base + '/cancel');
    if (!res.ok) { b.disabled = false; alert(P.errorMessage(res)); return; }
    show(res.data);
  });

  if (head.getAttribute('data-active') === 'true') setTimeout(poll, 2000);
})();
