// Fleetflow console: live updates of server-rendered pages. No framework, no build step,
// nothing loaded from elsewhere (the pages' Content-Security-Policy allows only this origin).
"use strict";

(function () {
  var TERMINAL = { SUCCEEDED: 1, FAILED: 1, CANCELLED: 1 };
  var LIST_POLL_MS = 3000;
  var LOG_POLL_MS = 2000;

  // Executions list: poll the table fragment while any execution shown is unfinished.
  function pollList(region) {
    if (region.getAttribute("data-active") !== "1") return;
    setTimeout(function () {
      fetch(region.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var box = document.createElement("div");
          box.innerHTML = html;  // the server's own escaped fragment
          var fresh = box.querySelector("#executions");
          if (!fresh) return;
          region.innerHTML = fresh.innerHTML;
          region.setAttribute("data-active", fresh.getAttribute("data-active"));
          pollList(region);
        })
        .catch(function () { setTimeout(function () { pollList(region); }, LIST_POLL_MS); });
    }, LIST_POLL_MS);
  }

  // One execution: recolour the graph from server-sent snapshots.
  function applySnapshot(root, snap) {
    root.setAttribute("data-status", snap.status);
    var badge = root.querySelector("p .badge");
    if (badge) { badge.textContent = snap.status; badge.setAttribute("data-state", snap.status); }
    var groups = root.querySelectorAll("svg.dag g.node");
    var drawn = {};
    for (var i = 0; i < groups.length; i++) {
      var g = groups[i];
      drawn[g.getAttribute("data-node")] = 1;
      var s = snap.nodes[g.getAttribute("data-node")];
      if (!s) continue;
      g.setAttribute("data-state", s[0]);
      if (s[2] !== null) {
        var count = g.querySelector("text.count");
        if (count) count.textContent = s[1] + "/" + s[2];
        drawBar(g.querySelector("g.bar"), s[3] || {});
      }
    }
    for (var id in snap.nodes) {
      if (!drawn[id]) { refreshGraph(root); break; }  // a dynamic sub-DAG grew
    }
    var digest = JSON.stringify(snap.attempts);
    if (root.getAttribute("data-attempts") !== null &&
        root.getAttribute("data-attempts") !== digest) refreshAttempts(root);
    root.setAttribute("data-attempts", digest);
  }

  // A map node's bar: one segment per element state, as wide as its share.
  var SVG = "http://www.w3.org/2000/svg";
  function drawBar(bar, counts) {
    if (!bar) return;
    var width = parseFloat(bar.getAttribute("data-width"));
    var total = 0, name;
    for (name in counts) total += counts[name];
    while (bar.firstChild) bar.removeChild(bar.firstChild);
    var x = 8;
    for (name in counts) {
      var w = total ? width * counts[name] / total : 0;
      var rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "seg");
      rect.setAttribute("data-state", name);
      rect.setAttribute("x", x.toFixed(1));
      rect.setAttribute("y", "39");
      rect.setAttribute("width", w.toFixed(1));
      rect.setAttribute("height", "4");
      bar.appendChild(rect);
      x += w;
    }
  }

  function refreshGraph(root) {
    var box = root.querySelector(".dagbox");
    if (!box || box.getAttribute("data-loading")) return;
    box.setAttribute("data-loading", "1");
    fetch(box.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { box.innerHTML = html; })  // the server's own escaped SVG
      .finally(function () { box.removeAttribute("data-loading"); });
  }

  function refreshAttempts(root) {
    var box = document.getElementById("attempts");
    if (!box) return;
    var open = {};
    var shown = box.querySelectorAll("details[open] pre[data-log]");
    for (var i = 0; i < shown.length; i++) open[shown[i].getAttribute("data-log")] = 1;
    fetch(box.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        box.innerHTML = html;  // the server's own escaped fragment
        var logs = box.querySelectorAll("pre[data-log]");
        for (var j = 0; j < logs.length; j++) {
          if (open[logs[j].getAttribute("data-log")]) logs[j].parentNode.open = true;
        }
        watchLogs(box);
      });
  }

  function followLog(pre) {
    if (pre.getAttribute("data-loading")) return;
    pre.setAttribute("data-loading", "1");
    function read() {
      if (!document.body.contains(pre)) return;
      fetch(pre.getAttribute("data-log"), { credentials: "same-origin" })
        .then(function (r) {
          var state = r.headers.get("X-Attempt-State") || "";
          return r.text().then(function (text) { return [r.ok, state, text]; });
        })
        .then(function (got) {
          pre.textContent = got[0] ? (got[2] || "(nothing printed yet)") : got[2];
          var finished = ["SUCCEEDED", "FAILED", "CANCELLED", "LOST", "PREEMPTED", "SKIPPED"].indexOf(got[1]) >= 0;
          if (got[0] && !finished && pre.getAttribute("data-follow")) setTimeout(read, LOG_POLL_MS);
        });
    }
    read();
  }

  function watchLogs(scope) {
    var details = scope.querySelectorAll("details.log");
    for (var i = 0; i < details.length; i++) {
      (function (d) {
        var pre = d.querySelector("pre[data-log]");
        if (d.open) followLog(pre);
        d.addEventListener("toggle", function () { if (d.open) followLog(pre); });
      })(details[i]);
    }
  }

  // Once the execution has ended: its page again (outputs, times, buttons), swapped in place.
  function refreshWhole(root) {
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("execution");
        if (!fresh) return;
        root.innerHTML = fresh.innerHTML;  // the server's own escaped page; scripts never run
        root.setAttribute("data-status", fresh.getAttribute("data-status"));
        root.setAttribute("data-final", "1");
        watchLogs(root);
      });
  }

  function watchExecution(root) {
    watchLogs(root);
    if (TERMINAL[root.getAttribute("data-status")] || !window.EventSource) {
      root.setAttribute("data-final", "1");
      return;
    }
    var source = new EventSource(root.getAttribute("data-events"));
    source.onmessage = function (event) { applySnapshot(root, JSON.parse(event.data)); };
    source.addEventListener("end", function () { source.close(); refreshWhole(root); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("executions");
    if (list) pollList(list);
    var execution = document.getElementById("execution");
    if (execution) watchExecution(execution);
  });
})();
