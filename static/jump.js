// "/" anywhere but in a field focuses the "Jump to key" box, as on many sites with a search box.
(function () {
  var box = document.getElementById("jump-key");
  if (!box) return;
  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented || typing(e.target)) return;
    e.preventDefault();  // or the "/" would be typed into the box
    box.focus();
    box.select();
  });
})();
