// Mita console: a little progressive enhancement. Every page works without it; with it, charts are drawn from
// the figures the page carries (a JSON block beside a table of the same figures), and print buttons print. No inline script anywhere (the pages' CSP forbids it).
"use strict";

function drawChart(figure) {
  const data = JSON.parse(figure.querySelector("script[type='application/json']").textContent);
  if (!data.length || typeof uPlot === "undefined") return;
  const key = figure.dataset.series;
  const xs = data.map((row, i) => (row.at ? Date.parse(row.at) / 1000 : i));
  const ys = data.map((row) => row[key]);
  const width = Math.max(280, figure.clientWidth - 20);
  const bars = figure.dataset.chart === "bars" && uPlot.paths && uPlot.paths.bars;
  const opts = {
    width: width, height: 200,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    series: [{}, { label: figure.dataset.label || key, stroke: "#0b5394", fill: "rgba(11,83,148,0.25)", points: { show: !bars },
                   width: 2, paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined }],
    axes: [{ stroke: "#1b1f24" }, { stroke: "#1b1f24" }],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
  };
  const holder = document.createElement("div");
  holder.setAttribute("aria-hidden", "true");
  figure.insertBefore(holder, figure.firstChild);
  new uPlot(opts, [xs, ys], holder);
}

// Tables marked "sortable" sort by a column when its header's button is pressed (keyboard too); aria-sort tells
// screen readers the order. Numbers sort as numbers, the rest as text; the server's order is the first one.
function sortable(table) {
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, col) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(button);
    button.addEventListener("click", () => {
      const up = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      const body = table.tBodies[0];
      const key = (row) => {
        const text = row.cells[col] ? row.cells[col].textContent.trim() : "";
        const n = Number(text.replace(/[^0-9.-]/g, ""));
        return text !== "" && /^[^A-Za-z]*[0-9][^A-Za-z]*$/.test(text) && !Number.isNaN(n) ? n : text.toLowerCase();
      };
      const rows = Array.from(body.rows).sort((a, b) => {
        const x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(sortable);
  document.querySelectorAll("figure[data-chart]").forEach(drawChart);
  document.querySelectorAll("[data-print]").forEach((b) => b.addEventListener("click", () => window.print()));
});
