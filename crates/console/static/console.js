// Riposte console: the little JavaScript there is. No inline scripts (CSP); values are
// written with textContent only.
"use strict";

// Password length checked as you type: <input data-length-check="8-16" data-hint=ID data-submit=ID>.
function lengthChecks() {
  document.querySelectorAll("input[data-length-check]").forEach(function (input) {
    var range = input.getAttribute("data-length-check").split("-");
    var min = parseInt(range[0], 10), max = parseInt(range[1], 10);
    var hint = document.getElementById(input.getAttribute("data-hint"));
    var submit = document.getElementById(input.getAttribute("data-submit"));
    function check() {
      var n = Array.from(input.value).length;
      var ok = n >= min && n <= max;
      if (hint) {
        if (n === 0) hint.textContent = min + " to " + max + " characters.";
        else if (n < min) hint.textContent = "Too short: " + n + " characters; the password needs " + min + " to " + max + ".";
        else if (n > max) hint.textContent = "Too long: " + n + " characters; the password needs " + min + " to " + max + ".";
        else hint.textContent = "Length OK: " + n + " characters.";
        hint.className = "hint " + (ok || n === 0 ? "good" : "bad");
      }
      if (submit) submit.disabled = !ok;
      input.setCustomValidity(ok || n === 0 ? "" : "The password needs " + min + " to " + max + " characters.");
    }
    input.addEventListener("input", check);
    check();
  });
}

// Live task progress over server-sent events: <div data-events=URL>.
function liveTasks() {
  var box = document.querySelector("[data-events]");
  if (!box || !window.EventSource) return;
  var es = new EventSource(box.getAttribute("data-events"));
  es.addEventListener("progress", function (e) {
    var msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    (msg.rows || []).forEach(function (r) {
      var tr = document.getElementById("dev-" + r.device_id);
      if (!tr) return;
      [["state", r.state], ["progress", r.progress || ""], ["hits", String(r.hits)], ["reason", r.reason], ["updated", r.updated]].forEach(function (kv) {
        var td = tr.querySelector("td." + kv[0]);
        if (td) td.textContent = kv[1];
      });
    });
    var c = msg.counts;
    if (c) {
      var text = document.getElementById("progress-text");
      if (text) text.textContent = c.done + " of " + c.total + " devices finished";
      var bar = document.getElementById("progress");
      if (bar) { bar.max = Math.max(c.total, 1); bar.value = c.done; }
    }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  lengthChecks();
  liveTasks();
});
