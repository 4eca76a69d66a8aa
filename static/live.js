// Live status of the runs listed on a page: poll while any of them is queued or running.
(function () {
  var script = document.currentScript;
  var url = script && script.getAttribute("data-status-url");
  if (!url) return;
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  // The same marker as the page's own rows (templates/runs/index.html) for a run that ended with warnings.
  function marker(warnings) {
    var span = document.createElement("span");
    span.className = "warn-marker";
    span.setAttribute("data-warnings", warnings.map(function (w) { return w.code; }).join(" "));
    span.title = warnings.map(function (w) { return w.message; }).join(" ");
    span.textContent = "\u26a0 " + warnings.length + " warning" + (warnings.length > 1 ? "s" : "");
    return span;
  }
  function active() {
    return Array.prototype.filter.call(document.querySelectorAll("tr[data-run]"), function (tr) {
      var s = tr.getAttribute("data-status");
      return s === "queued" || s === "running";
    });
  }
  function tick() {
    var rows = active();
    if (!rows.length) return;
    var ids = rows.map(function (tr) { return tr.getAttribute("data-run"); }).join(",");
    fetch(url + "?ids=" + ids, {headers: {"Accept": "application/json"}}).then(function (r) { return r.json(); })
      .then(function (body) {
        body.runs.forEach(function (run) {
          var tr = document.querySelector('tr[data-run="' + run.id + '"]');
          if (!tr) return;
          tr.setAttribute("data-status", run.status);
          var badge = tr.querySelector(".js-status .status");
          if (badge) { badge.textContent = run.status; badge.className = "status " + run.status; }
          if (run.warnings && run.warnings.length && badge && !tr.querySelector(".warn-marker")) {
            badge.parentNode.appendChild(document.createTextNode(" "));
            badge.parentNode.appendChild(marker(run.warnings));
          }
          var set = function (cls, v) { var td = tr.querySelector(cls); if (td) td.textContent = fmt(v); };
          set(".js-input", run.input_records); set(".js-loaded", run.inserted + run.updated);
          set(".js-rejected", run.rejected); set(".js-skipped", run.skipped);
        });
      }).catch(function () {}).then(function () { setTimeout(tick, 1500); });
  }
  setTimeout(tick, 1000);
})();
