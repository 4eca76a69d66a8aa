// Times are rendered in UTC; a footer button rewrites every <time> to the browser's time zone and back.
(function () {
  var KEY = "sluice.times";
  var button = document.getElementById("times-toggle");
  var note = document.getElementById("times-note");
  if (!button || !note || !window.Intl) return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  var pad = function (n) { return String(n).padStart(2, "0"); };
  function zoneName(d) {
    var part = new Intl.DateTimeFormat("en-US", {timeZoneName: "short"}).formatToParts(d)
      .filter(function (p) { return p.type === "timeZoneName"; })[0];
    return part ? part.value : zone;
  }
  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " " + zoneName(d);
  }
  function show(mode) {
    Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (el) {
      if (!el.hasAttribute("data-utc")) el.setAttribute("data-utc", el.textContent);
      var d = new Date(el.getAttribute("datetime"));
      if (mode === "local" && !isNaN(d)) {
        el.textContent = local(d);
        el.title = el.getAttribute("data-utc") + " UTC";
      } else {
        el.textContent = el.getAttribute("data-utc");
        el.removeAttribute("title");
      }
    });
    note.textContent = mode === "local" ? "Times are in your time zone (" + zone + ")." : "All times are UTC.";
    button.textContent = mode === "local" ? "Show UTC" : "Show local times";
    button.setAttribute("data-mode", mode);
  }
  function remembered() {
    try { return localStorage.getItem(KEY) === "local" ? "local" : "utc"; } catch (e) { return "utc"; }
  }
  button.addEventListener("click", function () {
    var mode = button.getAttribute("data-mode") === "local" ? "utc" : "local";
    try { localStorage.setItem(KEY, mode); } catch (e) { /* private mode: the choice lasts for this page */ }
    show(mode);
  });
  show(remembered());
  // Times a live page puts in later (run.js, live.js) follow the chosen zone too.
  document.addEventListener("sluice:times", function () { show(button.getAttribute("data-mode")); });
  button.hidden = false;
})();
