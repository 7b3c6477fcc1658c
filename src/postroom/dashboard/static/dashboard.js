/* Postroom dashboard: the little the pages cannot do without a script.
 *
 * - Charts: an element with data-chart holds its series as JSON in that attribute
 *   (escaped by the server, never evaluated); uPlot draws it. The table beside it
 *   has the same figures for readers without a canvas.
 * - Template preview: the draft's HTML is rendered only inside a sandboxed iframe.
 *   An iframe with data-preview-form is filled by posting that form into it.
 * No inline script, no eval: the page's Content-Security-Policy allows neither.
 */
(function () {
  "use strict";

  var COLOURS = ["#2457c5", "#1a8a4a", "#c53030", "#b7791f", "#7b3fbf", "#0e7c86"];

  function drawChart(el) {
    if (el.dataset.drawn || typeof window.uPlot !== "function") return;
    var spec = JSON.parse(el.dataset.chart);
    var width = Math.max(el.clientWidth, 280);
    var series = [{ label: "Time" }].concat(spec.series.map(function (s, i) {
      return { label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: spec.x.length < 40 } };
    }));
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    el.dataset.drawn = "1";
    var chart = new window.uPlot({
      width: width,
      height: 260,
      series: series,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } },
      axes: [{}, { values: function (u, ticks) { return ticks.map(function (t) { return Number.isInteger(t) ? t : ""; }); } }],
      legend: { live: true },
      tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); }
    }, data, el);
    if (window.ResizeObserver) {
      new window.ResizeObserver(function () {
        chart.setSize({ width: Math.max(el.clientWidth, 280), height: 260 });
      }).observe(el);
    }
  }

  function loadPreview(frame) {
    if (frame.dataset.loaded) return;
    var form = document.getElementById(frame.dataset.previewForm);
    if (!form) return;
    frame.dataset.loaded = "1";
    var action = form.getAttribute("action");
    var target = form.getAttribute("target");
    form.setAttribute("action", frame.dataset.previewAction);
    form.setAttribute("target", frame.name);
    form.submit(); /* submit() fires no submit event: htmx and the save are not involved */
    form.setAttribute("action", action);
    if (target === null) form.removeAttribute("target"); else form.setAttribute("target", target);
  }

  function scan(root) {
    root.querySelectorAll("[data-chart]").forEach(drawChart);
    root.querySelectorAll("iframe[data-preview-form]").forEach(loadPreview);
  }

  document.addEventListener("DOMContentLoaded", function () { scan(document); });
  document.addEventListener("htmx:afterSettle", function () { scan(document); });
})();
