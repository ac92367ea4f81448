// The chat playground of a text-generation endpoint. It calls the endpoint
// through the gateway (/endpoints/{ns}/{name}/v1/chat/completions, or
// /v1/completions in raw mode) the way the encoder playground does: the
// session cookie plus the X-CSRF-Token header, same origin. Requests stream
// (stream: true, stream_options.include_usage) and the SSE body is read with
// a ReadableStream reader, so each delta is appended to the assistant's
// bubble as it arrives; Stop aborts the fetch (the gateway and the worker
// then cancel the generation). Errors, whether the HTTP status (429, 400 with
// OpenAI's {"error": {"message", "code"}} or the hub's {"error", "code"}) or
// an error event inside the stream, become an error line in the chat.
(function () {
  'use strict';
  var P = window.Paddock;
  var form = document.getElementById('chat');
  if (!form) return;
  var base = form.getAttribute('data-chat-url');
  var model = form.getAttribute('data-model');
  var log = document.getElementById('chat-log');
  var input = document.getElementById('chat-input');
  var sendBtn = document.getElementById('chat-send');
  var stopBtn = document.getElementById('chat-stop');
  var status = document.getElementById('chat-status');
  var usageBox = document.getElementById('chat-usage');
  var raw = document.getElementById('chat-raw');

  // The conversation sent with each chat request (raw mode sends none).
  var history = [];
  // The request in flight: its AbortController.
  var running = null;

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function addMessage(role, label, text) {
    var li = document.createElement('li');
    li.className = 'msg msg-' + role;
    var who = document.createElement('span');
    who.className = 'msg-role';
    who.textContent = label;
    var body = document.createElement('div');
    body.className = 'msg-text';
    body.textContent = text || '';
    li.appendChild(who);
    li.appendChild(body);
    log.appendChild(li);
    scrollDown();
    return li;
  }

  /** An error line in the chat: "Error 429 (rate_limited): message". */
  function addError(httpStatus, code, message) {
    var li = addMessage('error', 'Error', '');
    li.setAttribute('role', 'alert');
    if (httpStatus) li.setAttribute('data-status', String(httpStatus));
    if (code) li.setAttribute('data-code', code);
    li.querySelector('.msg-text').textContent =
      (httpStatus ? 'HTTP ' + httpStatus + (code ? ' (' + code + ')' : '') + ': ' : (code ? code + ': ' : '')) + message;
    return li;
  }

  /** Message and code of an error body: OpenAI's {"error": {...}} or the hub's {"error": "...", "code"}. */
  function errorOf(data, httpStatus) {
    if (data && data.error && typeof data.error === 'object') {
      return { message: data.error.message || JSON.stringify(data.error), code: data.error.code || data.error.type || '' };
    }
    if (data && typeof data.error === 'string') return { message: data.error, code: data.code || '' };
    if (data && data.message) return { message: data.message, code: data.code || '' };
    if (httpStatus === 401) return { message: 'Your session has ended: sign in again.', code: '' };
    return { message: 'The request failed.', code: '' };
  }

  /**
   * Reads an SSE body event by event (a chunk may hold several events or
   * part of one); calls onData with each event's data. Stops at [DONE].
   */
  async function readSse(body, onData) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buf = '';
    for (;;) {
      var r = await reader.read();
      if (r.done) buf += decoder.decode();
      else buf += decoder.decode(r.value, { stream: true });
      var m;
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        var event = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        var data = event.split(/\r?\n/)
          .filter(function (l) { return l.indexOf('data:') === 0; })
          .map(function (l) { return l.slice(5).replace(/^ /, ''); })
          .join('\n');
        if (!data) continue; // a comment (keep-alive) or an event without data
        if (data === '[DONE]') { reader.cancel().catch(function () {}); return; }
        onData(data);
      }
      if (r.done) return;
    }
  }

  function number(id, min, max, integer, what) {
    var el = document.getElementById(id);
    var v = Number(el.value);
    if (el.value.trim() === '' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
      throw new Error(what + ' must be ' + (integer ? 'a whole number' : 'a number') + ' from ' + min + ' to ' + max + '.');
    }
    return v;
  }

  function setBusy(on) {
    sendBtn.disabled = on;
    stopBtn.disabled = !on;
    form.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function fmtMs(ms) { return Math.round(ms) + ' ms'; }

  function showUsage(u, ttft, tokPerS, missing) {
    usageBox.textContent = '';
    var parts = [];
    if (u) {
      usageBox.setAttribute('data-prompt-tokens', String(u.prompt_tokens));
      usageBox.setAttribute('data-completion-tokens', String(u.completion_tokens));
      parts.push(u.prompt_tokens + ' prompt tokens', u.completion_tokens + ' completion tokens');
      if (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) {
        parts.push(u.prompt_tokens_details.cached_tokens + ' prompt tokens cached');
      }
    } else {
      usageBox.removeAttribute('data-prompt-tokens');
      usageBox.removeAttribute('data-completion-tokens');
      parts.push(missing || 'usage not reported');
    }
    if (ttft != null) {
      usageBox.setAttribute('data-ttft-ms', String(Math.round(ttft)));
      parts.push('first token after ' + fmtMs(ttft));
    } else {
      usageBox.removeAttribute('data-ttft-ms');
    }
    if (tokPerS) parts.push(tokPerS.toFixed(1) + ' tokens/s');
    usageBox.textContent = parts.join(' · ');
  }

  async function send(text) {
    var raw_mode = raw.checked;
    var temperature = number('chat-temperature', 0, 2, false, 'Temperature');
    var maxTokens = number('chat-max-tokens', 1, 32768, true, 'Max tokens');
    var system = document.getElementById('chat-system').value.trim();
    var body = {
      model: model, stream: true, stream_options: { include_usage: true },
      temperature: temperature, max_tokens: maxTokens
    };
    var url;
    var turn = null;
    // Clear may start a new conversation while this request ends: this one's
    // turns go to the conversation it belongs to.
    var convo = history;
    if (raw_mode) {
      url = base + '/completions';
      body.prompt = text;
      addMessage('user', 'Prompt', text);
    } else {
      url = base + '/chat/completions';
      turn = { role: 'user', content: text };
      convo.push(turn);
      body.messages = (system ? [{ role: 'system', content: system }] : []).concat(convo);
      addMessage('user', 'You', text);
    }
    var forget = function () {
      var i = turn ? convo.indexOf(turn) : -1;
      if (i >= 0) convo.splice(i, 1);
    };

    var controller = new AbortController();
    running = controller;
    setBusy(true);
    usageBox.textContent = '';
    status.textContent = 'Waiting for the model… (a scaled-to-zero endpoint wakes up first)';
    var headers = { 'Content-Type': 'application/json', 'Accept': 'text/event-stream' };
    var csrf = P.csrf();
    if (csrf) headers['X-CSRF-Token'] = csrf;
    var t0 = performance.now();
    var bubble = null, textNode = null, textBox = null;
    var firstAt = null, usage = null, finish = null, content = '';
    try {
      var res = await fetch(url, {
        method: 'POST', headers: headers, body: JSON.stringify(body),
        credentials: 'same-origin', signal: controller.signal
      });
      if (!res.ok) {
        var errText = await res.text();
        var data = null;
        try { data = JSON.parse(errText); } catch (e) { data = { error: errText.slice(0, 500) }; }
        var err = errorOf(data, res.status);
        var retry = res.headers.get('Retry-After');
        forget();
        addError(res.status, err.code, err.message + (retry ? ' Retry after ' + retry + ' s.' : ''));
        status.textContent = '';
        return;
      }
      bubble = addMessage('assistant', raw_mode ? 'Completion' : 'Assistant', '');
      bubble.setAttribute('data-state', 'streaming');
      textBox = bubble.querySelector('.msg-text');
      textBox.setAttribute('aria-live', 'polite');
      textBox.setAttribute('aria-busy', 'true');
      textNode = document.createTextNode('');
      textBox.appendChild(textNode);
      status.textContent = 'Generating…';
      var streamError = null;
      await readSse(res.body, function (d) {
        var chunk;
        try { chunk = JSON.parse(d); } catch (e) { return; }
        if (chunk.error) { streamError = errorOf(chunk, 0); return; }
        if (chunk.usage) usage = chunk.usage;
        var c = chunk.choices && chunk.choices[0];
        if (!c) return;
        var delta = raw_mode ? c.text : (c.delta && c.delta.content);
        if (delta) {
          if (firstAt === null) firstAt = performance.now();
          textNode.appendData(delta);
          content += delta;
          scrollDown();
        }
        if (c.finish_reason) finish = c.finish_reason;
      });
      var end = performance.now();
      var ttft = firstAt === null ? null : firstAt - t0;
      var rate = usage && firstAt !== null && usage.completion_tokens > 1 && end > firstAt
        ? (usage.completion_tokens - 1) / ((end - firstAt) / 1000) : null;
      if (streamError) {
        bubble.setAttribute('data-state', 'error');
        forget();
        addError(0, streamError.code, streamError.message);
        status.textContent = '';
      } else {
        bubble.setAttribute('data-state', 'done');
        if (finish) bubble.setAttribute('data-finish', finish);
        if (turn) convo.push({ role: 'assistant', content: content });
        status.textContent = 'Done in ' + fmtMs(end - t0) + (finish === 'length' ? ' (stopped at max tokens)' : '') + '.';
      }
      showUsage(usage, ttft, rate);
    } catch (e) {
      if (e && e.name === 'AbortError') {
        if (bubble) {
          bubble.setAttribute('data-state', 'stopped');
          // What was generated stays part of the conversation.
          if (turn) convo.push({ role: 'assistant', content: content });
        } else {
          forget();
        }
        status.textContent = 'Stopped.';
        showUsage(null, firstAt === null ? null : firstAt - t0, null, 'stopped before the usage was reported');
      } else {
        if (bubble) bubble.setAttribute('data-state', 'error');
        forget();
        addError(0, '', 'The connection failed: ' + (e && e.message ? e.message : String(e)));
        status.textContent = '';
      }
    } finally {
      if (textBox) textBox.setAttribute('aria-busy', 'false');
      running = null;
      setBusy(false);
    }
  }

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (running) return;
    P.clearErrors(form);
    var text = input.value;
    if (!text.trim()) { P.showError(form, null, 'Type a message first.'); return; }
    input.value = '';
    send(text).catch(function (e) { P.showError(form, null, e.message || String(e)); input.value = text; setBusy(false); });
  });

  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (typeof form.requestSubmit === 'function') form.requestSubmit(); else sendBtn.click();
    }
  });

  stopBtn.addEventListener('click', function () {
    if (running) running.abort();
  });

  document.getElementById('chat-clear').addEventListener('click', function () {
    if (running) running.abort();
    history = [];
    log.textContent = '';
    usageBox.textContent = '';
    status.textContent = '';
    input.focus();
  });

  raw.addEventListener('change', function () {
    document.querySelector('label[for="chat-input"]').textContent = raw.checked ? 'Prompt' : 'Message';
    document.getElementById('chat-system').disabled = raw.checked;
  });
})();
