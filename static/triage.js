// Dead-letter triage: the page's header checkbox, the live "N selected" count and the "all N matching"
// toggle. Without this script the checkboxes and buttons still post the selection to the confirmation page.
(function () {
  "use strict";
  var form = document.getElementById("selection");
  if (!form) return;
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name="ids"][form="selection"]'));
  var page = document.getElementById("pick-page");
  var all = document.getElementById("all-matching");
  var count = document.getElementById("selected-count");
  var matching = form.getAttribute("data-view-count") || "0";  // as the page writes it: "1,234", "10,000+"
  var buttons = Array.prototype.slice.call(form.querySelectorAll('button[name="action"]'));

  function update() {
    var checked = boxes.filter(function (b) { return b.checked; }).length;
    page.checked = checked > 0 && checked === boxes.length;
    page.indeterminate = checked > 0 && checked < boxes.length;
    boxes.forEach(function (b) { b.disabled = all.checked; });
    count.textContent = all.checked ? "all " + matching + " matching selected" : checked + " selected";
    buttons.forEach(function (b) { b.disabled = all.checked ? matching === "0" : checked === 0; });
  }

  page.hidden = false;
  count.hidden = false;
  page.addEventListener("change", function () {
    boxes.forEach(function (b) { b.checked = page.checked; });
    update();
  });
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  all.addEventListener("change", update);
  update();
})();
