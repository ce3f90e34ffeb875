// Gridlink web console: live updates and small conveniences. No framework, no external files.
(function () {
  'use strict';

  // Forms that reload on change (choosing a service item shows its checklist).
  document.querySelectorAll('[data-autosubmit]').forEach(function (el) {
    el.addEventListener('change', function () { if (el.value) el.form.submit(); });
  });
  document.querySelectorAll('[data-print]').forEach(function (el) {
    el.addEventListener('click', function () { window.print(); });
  });
  document.querySelectorAll('[data-back]').forEach(function (el) {
    el.addEventListener('click', function (e) { if (history.length > 1) { e.preventDefault(); history.back(); } });
    el.setAttribute('href', '/console/');
  });
  document.querySelectorAll('[data-check-all]').forEach(function (all) {
    all.checked = true;
    all.addEventListener('change', function () {
      all.closest('table').querySelectorAll('input[name="ids"]').forEach(function (c) { c.checked = all.checked; });
    });
  });

  // Live updates: the server says a record in my scope changed; fetch this page again and swap
  // the live regions, leaving alone a region where the user is typing.
  if (document.body.dataset.live !== '1' || !window.EventSource) return;
  var status = document.getElementById('live-status');
  var timer = null;
  var busy = false;
  function busyIn(region) {
    var a = document.activeElement;
    if (a && region.contains(a) && a !== document.body) return true;
    return Array.prototype.some.call(region.querySelectorAll('textarea, input[type=text], input:not([type])'), function (f) {
      return f.value !== f.defaultValue;
    });
  }
  function refresh() {
    if (busy) { timer = setTimeout(refresh, 500); return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', headers: { 'X-Requested-With': 'live' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, 'text/html');
        document.querySelectorAll('[data-live-region]').forEach(function (region) {
          var fresh = doc.getElementById(region.id);
          if (fresh && !busyIn(region) && fresh.innerHTML !== region.innerHTML) region.replaceWith(fresh);
        });
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        status.textContent = '已更新 ' + new Date().toLocaleTimeString('zh-CN');
        status.classList.add('show');
        setTimeout(function () { status.classList.remove('show'); }, 2000);
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  var events = new EventSource('/api/v1/events');
  events.addEventListener('open', function () { document.body.dataset.liveReady = '1'; });
  events.addEventListener('sync', function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
})();
