// The live run page: poll progress.json while the run is queued or running, update its status, times,
// watermark, phase (in the server's words), bar and counts so far; when it ends, put the finished page's
// content in place without a reload.
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  var url = live.getAttribute("data-url");
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  var byId = function (id) { return document.getElementById(id); };
  function text(id, value) { var el = byId(id); if (el && el.textContent !== value) el.textContent = value; }
  function time(id, value) {
    var el = byId(id);
    if (!el || !value || el.querySelector("time")) return;
    var t = document.createElement("time");
    t.setAttribute("datetime", value + "Z");
    t.textContent = value.slice(0, 19).replace("T", " ");
    el.replaceChildren(t);
    document.dispatchEvent(new CustomEvent("sluice:times"));  // times.js shows it in the chosen zone
  }
  function status(value) {
    var holder = byId("run-status");
    if (!holder || holder.getAttribute("data-status") === value) return;
    holder.setAttribute("data-status", value);
    var badge = holder.querySelector(".status");
    if (badge) { badge.textContent = value; badge.className = "status " + value; }
  }
  function update(run) {
    status(run.status);
    text("run-phase", run.phase_label);
    time("run-started", run.started_at);
    if (run.started_at) {
      text("run-watermark-before", run.watermark_before ? run.watermark_before.replace("T", " ") : "none");
      text("run-watermark-note", "(when the run started)");
    }
    var bar = byId("run-progress");
    if (run.percent === null) bar.removeAttribute("value"); else bar.value = run.percent;
    text("run-percent", run.percent === null ? "" : run.percent + "%");
    text("run-time-left", run.time_left || "");
    Object.keys(run.so_far || {}).forEach(function (name) {
      var td = document.querySelector('tr[data-count="' + name + '"] td');
      if (td) td.textContent = fmt(run.so_far[name]);
    });
  }
  // The finished page, fetched and swapped in whole: every part (badge, counts, warnings and their
  // backfill button, times, watermark, error, dead letters, lineage) is the server's own rendering,
  // with its forms' CSRF tokens. A sign-in page or an error falls back to a reload.
  function finish() {
    var here = window.location.href.split("#")[0];
    fetch(here, {headers: {"Accept": "text/html"}, credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok || r.redirected) throw new Error("not the run page");
        return r.text();
      })
      .then(function (html) {
        var main = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (!main) throw new Error("not the run page");
        byId("main").replaceChildren.apply(byId("main"), Array.prototype.slice.call(main.childNodes));
        document.dispatchEvent(new CustomEvent("sluice:times"));
      })
      .catch(function () { window.location.reload(); });
  }
  function tick() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (run) {
        if (run.status !== "queued" && run.status !== "running") { finish(); return; }
        update(run);
        setTimeout(tick, 1000);
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 700);
})();
