// Draws every <canvas data-chart="…json…"> with the vendored Chart.js. No inline script:
// the page's Content-Security-Policy allows scripts from this origin's files only.
(function () {
  "use strict";
  var palette = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#319795"];
  function draw(canvas) {
    var spec = JSON.parse(canvas.getAttribute("data-chart"));
    spec.data.datasets.forEach(function (d, i) {
      // Past the palette, hues a golden angle apart: 15+ partners stay told apart.
      var colour = i < palette.length ? palette[i] : "hsl(" + ((i * 137.5) % 360) + ", 60%, 45%)";
      d.backgroundColor = colour;
      d.borderColor = colour;
    });
    var stacked = Boolean(spec.options.stacked);
    new Chart(canvas, {
      type: spec.type,
      data: spec.data,
      options: {
        animation: false,
        responsive: false,
        plugins: { title: { display: true, text: spec.options.title } },
        scales: {
          x: { stacked: stacked },
          // Bars count points, members or money: no tick between two whole numbers.
          y: { stacked: stacked, beginAtZero: true, ticks: spec.type === "bar" ? { precision: 0 } : {} }
        }
      }
    });
    canvas.setAttribute("data-drawn", "yes");
  }
  document.querySelectorAll("canvas[data-chart]").forEach(draw);
})();
