(function () {
  var boxes = function (name) { return Array.prototype.slice.call(document.querySelectorAll('input[name="' + name + '"]')); };
  var checked = function (name) { return boxes(name).filter(function (b) { return b.checked; }).map(function (b) { return b.value; }); };
  function apply() {
    var topics = checked('topic'), outcomes = checked('outcome');
    var onlyDiff = document.getElementById('only-diff').checked;
    var shownTopics = {};
    document.querySelectorAll('tr.case').forEach(function (tr) {
      var cells = Array.prototype.slice.call(tr.querySelectorAll('td.cell'));
      var show = topics.indexOf(tr.dataset.topic) >= 0 &&
        cells.some(function (td) { return outcomes.indexOf(td.dataset.status) >= 0; }) &&
        (!onlyDiff || tr.dataset.differs === 'true');
      tr.classList.toggle('hidden', !show);
      if (show) { shownTopics[tr.dataset.topic] = true; }
    });
    document.querySelectorAll('tr.topic').forEach(function (tr) {
      tr.classList.toggle('hidden', !shownTopics[tr.dataset.topic]);
    });
  }
  function show(td) {
    document.querySelectorAll('td.selected').forEach(function (x) { x.classList.remove('selected'); });
    var d = td && document.getElementById(td.dataset.detail);
    var panel = document.getElementById('detail');
    if (!d) { panel.hidden = true; return; }
    td.classList.add('selected');
    document.getElementById('detail-title').textContent = d.dataset.title;
    document.getElementById('detail-body').textContent = d.textContent;
    panel.hidden = false;
  }
  function cellOf(caseId, col) {
    var found = null;
    document.querySelectorAll('tr.case').forEach(function (tr) {
      if (tr.dataset.case === caseId) { found = tr.querySelector('td.cell[data-col="' + col + '"]'); }
    });
    return found;
  }
  // The fragment holds the state: case=ID&col=N, outcome=a,b, topic=a,b, diff.
  function fromHash() {
    var params = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      if (!kv) { return; }
      var i = kv.indexOf('=');
      params[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1));
    });
    if ('outcome' in params) { var o = params.outcome.split(','); boxes('outcome').forEach(function (b) { b.checked = o.indexOf(b.value) >= 0; }); }
    if ('topic' in params) { var t = params.topic.split(','); boxes('topic').forEach(function (b) { b.checked = t.indexOf(b.value) >= 0; }); }
    if ('diff' in params) { document.getElementById('only-diff').checked = true; }
    apply();
    if ('case' in params) { show(cellOf(params['case'], params.col || '0')); }
  }
  document.getElementById('filters').addEventListener('change', apply);
  document.getElementById('grid').addEventListener('click', function (e) {
    var td = e.target.closest('td.cell');
    if (!td) { return; }
    var tr = td.parentElement;
    history.replaceState(null, '', '#case=' + encodeURIComponent(tr.dataset.case) + '&col=' + td.dataset.col);
    show(td);
  });
  document.getElementById('grid').addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && e.target.matches('td.cell')) { e.target.click(); }
  });
  document.getElementById('close').addEventListener('click', function () { show(null); });
  window.addEventListener('hashchange', fromHash);
  fromHash();
})();
