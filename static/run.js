// Live progress of a queued or running run; reload the page once it ends to show the outcome.
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  var bar = document.getElementById("run-progress");
  var phase = document.getElementById("run-phase");
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  function tick() {
    fetch(live.getAttribute("data-url"), {headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (run) {
        if (run.status !== "queued" && run.status !== "running") { window.location.reload(); return; }
        var p = run.progress;
        if (p) {
          if (p.file_size) bar.value = Math.min(100, Math.round(100 * p.bytes_read / p.file_size));
          else bar.removeAttribute("value");
          phase.textContent = p.phase + ": " + fmt(p.records) + " records read";
        } else {
          phase.textContent = run.status + ": waiting for its turn";
        }
        setTimeout(tick, 1000);
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 700);
})();
