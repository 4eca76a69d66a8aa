// Upload with a progress bar (XHR) and drag and drop; the form still posts normally without JavaScript.
(function () {
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = document.getElementById("files");
  var drop = document.getElementById("drop");
  var bar = document.getElementById("upload-progress");
  var statusEl = document.getElementById("upload-status");
  var chosen = document.getElementById("chosen");
  var dropped = null;

  function size(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function files() { return dropped || input.files; }
  function list() {
    chosen.textContent = "";
    Array.prototype.forEach.call(files(), function (f) {
      var li = document.createElement("li");
      li.textContent = f.name + " (" + size(f.size) + ")";
      chosen.appendChild(li);
    });
  }
  input.addEventListener("change", function () { dropped = null; list(); });
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    try { input.files = e.dataTransfer.files; dropped = null; } catch (err) { dropped = e.dataTransfer.files; }
    list();
  });

  form.addEventListener("submit", function (e) {
    if (!window.FormData || !files().length) return;  // let the browser post (and the server explain)
    e.preventDefault();
    var data = new FormData(form);
    if (dropped) {
      data.delete("files");
      Array.prototype.forEach.call(dropped, function (f) { data.append("files", f, f.name); });
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false; bar.value = 0;
    form.querySelector("button[type=submit]").disabled = true;
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) {
        bar.value = Math.round(100 * ev.loaded / ev.total);
        statusEl.textContent = "Uploading… " + bar.value + "% of " + size(ev.total);
      }
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (body && body.location && (!body.errors || !body.errors.length)) {
        statusEl.textContent = "Uploaded. Opening the run…";
        window.location = body.location;
        return;
      }
      form.querySelector("button[type=submit]").disabled = false;
      var message = body && body.errors && body.errors.length ? body.errors.join(" ")
        : body && body.error ? body.error.message : "The upload failed (HTTP " + xhr.status + ").";
      if (body && body.location) {
        statusEl.innerHTML = "";
        statusEl.appendChild(document.createTextNode(message + " "));
        var a = document.createElement("a"); a.href = body.location; a.textContent = "See the queued runs";
        statusEl.appendChild(a);
      } else {
        statusEl.textContent = message;
      }
      statusEl.className = "error";
    });
    xhr.addEventListener("error", function () {
      form.querySelector("button[type=submit]").disabled = false;
      statusEl.textContent = "The upload did not reach the server. Check the connection and try again.";
      statusEl.className = "error";
    });
    xhr.send(data);
  });
})();
