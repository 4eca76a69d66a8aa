// Live status of the runs listed on a page: poll status.json while any of them is queued or running.
// Every element in a row `tr[data-run]` that carries `data-live="<field>"` shows that field of the run's
// status row (app/queries/runs.py run_status), or a derived one: `loaded` (inserted + updated),
// `duration` (finished - started, "1 m 05 s") and `rate` (input records per second). When a run of the
// signed-in user ends while the page is open, a notice says so (on the page only).
(function () {
  var script = document.currentScript;
  var url = script && script.getAttribute("data-status-url");
  if (!url) return;
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  var who = document.getElementById("who-name");
  var me = who ? who.textContent.trim() : "";
  var ACTIVE = {queued: true, running: true};
  var COUNTS = ["input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated",
                "unchanged", "stale", "dead_letters", "lineage_entries", "loaded", "ahead"];
  var watched = {};  // the runs that were queued or running while this page was open

  function notices() {
    var box = document.getElementById("run-notices");
    if (!box) {
      box = document.createElement("div");
      box.id = "run-notices";
      box.className = "run-notices";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      var main = document.getElementById("main") || document.body;
      main.insertBefore(box, main.firstChild);
    }
    return box;
  }
  if (me) notices();  // present before anything is announced in it

  function seconds(run) {
    if (!run.started_at || !run.finished_at) return null;
    return Math.max(0, (Date.parse(run.finished_at + "Z") - Date.parse(run.started_at + "Z")) / 1000);
  }
  function durationText(s) {
    s = Math.round(s);
    var pad = function (n) { return String(n).padStart(2, "0"); };
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + pad(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + pad(Math.floor(s % 3600 / 60)) + " m";
  }
  var DERIVED = {
    loaded: function (run) { return run.inserted + run.updated; },
    duration: function (run) { var s = seconds(run); return s === null ? "" : durationText(s); },
    rate: function (run) {
      var s = seconds(run);
      return s ? fmt(Math.round(run.input_records / s)) + "/s" : "";
    }
  };
  // The same marker as the pages' own rows for a run that ended with warnings.
  function marker(warnings) {
    var span = document.createElement("span");
    span.className = "warn-marker";
    span.setAttribute("data-warnings", warnings.map(function (w) { return w.code; }).join(" "));
    span.title = warnings.map(function (w) { return w.message; }).join(" ");
    span.textContent = "\u26a0 " + warnings.length + " warning" + (warnings.length > 1 ? "s" : "");
    return span;
  }
  function timeOf(value) {
    if (!value) {
      var none = document.createElement("span");
      none.className = "muted";
      none.textContent = "\u2014";
      return none;
    }
    var t = document.createElement("time");
    t.setAttribute("datetime", value + "Z");
    t.textContent = value.slice(0, 19).replace("T", " ");
    return t;
  }
  function fill(el, field, run) {
    var value = DERIVED[field] ? DERIVED[field](run) : run[field];
    if (field === "status") {
      var badge = el.classList.contains("status") ? el : el.querySelector(".status");
      if (badge) { badge.textContent = value; badge.className = "status " + value; } else el.textContent = value;
    } else if (field === "warnings") {
      var now = el.querySelector(".warn-marker");
      if ((now ? now.getAttribute("data-warnings") : "") !== value.map(function (w) { return w.code; }).join(" ")) {
        el.replaceChildren.apply(el, value.length ? [marker(value)] : []);
      }
    } else if (/_at$/.test(field)) {
      var shown = el.querySelector("time");
      if ((shown ? shown.getAttribute("datetime") : null) !== (value ? value + "Z" : null)) {
        el.replaceChildren(timeOf(value));
        document.dispatchEvent(new CustomEvent("sluice:times"));
      }
    } else if (COUNTS.indexOf(field) >= 0 && value !== null && value !== undefined) {
      el.textContent = fmt(value);
    } else if (/^watermark_/.test(field)) {
      el.textContent = value ? value.replace("T", " ") : "none";
    } else {
      el.textContent = value === null || value === undefined ? "" : String(value);
    }
  }
  // Rows written before `data-live` (the `.js-*` cells of templates/runs/index.html) are filled too.
  var LEGACY = {".js-input": "input_records", ".js-loaded": "loaded", ".js-rejected": "rejected",
                ".js-skipped": "skipped"};
  function legacy(tr, run) {
    var badge = tr.querySelector(".js-status .status");
    if (badge) {
      fill(badge, "status", run);
      if (run.warnings.length && !tr.querySelector(".warn-marker")) {
        badge.parentNode.appendChild(document.createTextNode(" "));
        badge.parentNode.appendChild(marker(run.warnings));
      }
    }
    Object.keys(LEGACY).forEach(function (cls) {
      var td = tr.querySelector(cls);
      if (td) fill(td, LEGACY[cls], run);
    });
  }
  function mine(run) {
    var by = run.created_by || "";
    return me !== "" && (by === me || by.indexOf(me + " (token ") === 0);
  }
  function announce(tr, run) {
    var link = document.createElement("a");
    link.href = url.replace(/status\.json$/, String(run.id));
    link.textContent = "Run #" + run.id;
    var words;
    if (run.status === "succeeded") {
      words = " finished: succeeded, " + fmt(run.inserted + run.updated) + " loaded";
      if (run.warnings.length) {
        words += "; " + run.warnings.length + " warning" + (run.warnings.length > 1 ? "s" : "") + ": " +
          run.warnings.map(function (w) { return w.message; }).join(" ");
      }
    } else if (run.status === "failed") {
      words = " failed: " + (run.error || "see its page");
    } else {
      words = " was cancelled.";
    }
    var note = document.createElement("p");
    note.className = "run-notice " + (run.status === "failed" ? "bad" : run.warnings.length ? "warn" :
                                      run.status === "succeeded" ? "ok" : "neutral");
    note.setAttribute("data-run", run.id);
    note.appendChild(link);
    note.appendChild(document.createTextNode(words));
    var close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "Dismiss";
    close.addEventListener("click", function () { note.remove(); });
    note.appendChild(document.createTextNode(" "));
    note.appendChild(close);
    notices().appendChild(note);
  }
  function active() {
    return Array.prototype.filter.call(document.querySelectorAll("tr[data-run]"), function (tr) {
      return ACTIVE[tr.getAttribute("data-status")];
    });
  }
  function tick() {
    var rows = active();
    if (!rows.length) return;
    var ids = rows.map(function (tr) {
      watched[tr.getAttribute("data-run")] = true;
      return tr.getAttribute("data-run");
    }).join(",");
    fetch(url + "?ids=" + ids, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (body) {
        body.runs.forEach(function (run) {
          var tr = document.querySelector('tr[data-run="' + run.id + '"]');
          if (!tr) return;
          var was = tr.getAttribute("data-status");
          tr.setAttribute("data-status", run.status);
          Array.prototype.forEach.call(tr.querySelectorAll("[data-live]"), function (el) {
            fill(el, el.getAttribute("data-live"), run);
          });
          legacy(tr, run);
          if (ACTIVE[was] && !ACTIVE[run.status] && watched[run.id] && mine(run)) announce(tr, run);
        });
      }).catch(function () {}).then(function () { setTimeout(tick, 1500); });
  }
  setTimeout(tick, 1000);
})();
