// pacs-triage console: live worklist (server-sent events), waiting times, keyboard navigation.
// No build step, no dependency.
(function () {
  "use strict";

  function fmtWait(seconds) {
    if (!(seconds >= 0)) return "–";
    var m = Math.floor(seconds / 60), h = Math.floor(m / 60);
    if (h >= 48) return Math.floor(h / 24) + " d " + (h % 24) + " h";
    if (h >= 1) return h + " h " + String(m % 60).padStart(2, "0") + " min";
    if (m >= 1) return m + " min";
    return Math.floor(seconds) + " s";
  }

  function tickWaits() {
    var now = Date.now() / 1000;
    document.querySelectorAll("td.wait[data-since]").forEach(function (td) {
      var since = parseFloat(td.getAttribute("data-since"));
      td.textContent = isNaN(since) ? "–" : fmtWait(now - since);
    });
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#rows tr.row")); }

  var selected = null;  // study UID of the selected row, kept across refreshes

  function select(tr) {
    rows().forEach(function (r) { r.classList.remove("sel"); });
    if (!tr) return;
    tr.classList.add("sel");
    tr.focus({ preventScroll: false });
    selected = tr.getAttribute("data-uid");
  }

  function restoreSelection() {
    if (!selected) return;
    var tr = document.querySelector('#rows tr.row[data-uid="' + CSS.escape(selected) + '"]');
    if (tr) { tr.classList.add("sel"); }
  }

  function refreshRows() {
    var tbody = document.getElementById("rows");
    if (!tbody) return;
    fetch("/console/rows" + window.location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text().then(function (t) { return [t, r.headers.get("X-Worklist-Version")]; }); })
      .then(function (res) {
        var hadFocus = document.activeElement && document.activeElement.closest && document.activeElement.closest("#rows");
        tbody.innerHTML = res[0];
        document.getElementById("live").setAttribute("data-version", res[1] || "");
        tickWaits();
        restoreSelection();
        if (hadFocus && selected) { var s = document.querySelector("#rows tr.sel"); if (s) s.focus(); }
      })
      .catch(function () { /* the next event retries */ });
  }

  function live() {
    var badge = document.getElementById("live");
    if (!badge || !window.EventSource) return;
    var es = new EventSource("/console/events" + window.location.search);
    es.addEventListener("worklist", function (ev) {
      badge.className = "live on";
      if (ev.data !== badge.getAttribute("data-version")) refreshRows();  // not the page's own version
    });
    es.onerror = function () { badge.className = "live off"; };
    es.onopen = function () { badge.className = "live on"; };
  }

  function keys() {
    document.addEventListener("keydown", function (ev) {
      var t = ev.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
        if (ev.key === "Escape") t.blur();
        return;
      }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var list = rows();
      var cur = document.querySelector("#rows tr.sel") || (t && t.closest && t.closest("tr.row"));
      var i = cur ? list.indexOf(cur) : -1;
      if (ev.key === "j" || ev.key === "ArrowDown") {
        if (list.length) select(list[Math.min(i + 1, list.length - 1)]);
        ev.preventDefault();
      } else if (ev.key === "k" || ev.key === "ArrowUp") {
        if (list.length) select(list[Math.max(i - 1, 0)]);
        ev.preventDefault();
      } else if (ev.key === "Enter" && cur) {
        window.location.href = cur.getAttribute("data-href");
      } else if (ev.key === "/") {
        var f = document.getElementById("f-priority");
        if (f) { f.focus(); ev.preventDefault(); }
      } else if (ev.key === "w") {
        window.location.href = "/console/";
      } else if (ev.key === "Backspace" && document.body.classList.contains("study")) {
        window.history.back();
      }
    });
    document.addEventListener("click", function (ev) {
      var tr = ev.target.closest && ev.target.closest("#rows tr.row");
      if (tr && !ev.target.closest("a")) window.location.href = tr.getAttribute("data-href");
    });
    ["f-priority", "f-flag"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.addEventListener("change", function () { document.getElementById("filters").submit(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tickWaits();
    setInterval(tickWaits, 1000);
    keys();
    live();
  });
})();
