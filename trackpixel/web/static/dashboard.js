// Draws the overview time series with uPlot from the JSON embedded in the page.
(function () {
  "use strict";
  var source = document.getElementById("series-data");
  var target = document.getElementById("chart");
  if (!source || !target || typeof uPlot === "undefined") {
    return;
  }
  var series = JSON.parse(source.textContent);
  var labels = series.labels;
  var xs = labels.map(function (_, index) { return index; });

  function options(width) {
    return {
      width: width,
      height: 240,
      scales: { x: { time: false } },
      axes: [
        {
          values: function (_, ticks) {
            return ticks.map(function (tick) { return labels[tick] || ""; });
          },
          space: 90,
        },
        {},
      ],
      series: [
        { value: function (_, index) { return labels[index] || ""; } },
        { label: "Visitors", stroke: "#2563eb", width: 2 },
        { label: "Page views", stroke: "#16a34a", width: 2 },
        {
          label: "Visitors, previous period",
          stroke: "#94a3b8",
          width: 2,
          dash: [6, 4],
          value: function (_, value, __, index) {
            var day = (series.previous_labels || [])[index];
            return value === null || value === undefined ? "" : value + (day ? " (" + day + ")" : "");
          },
        },
      ],
    };
  }

  var previous = series.previous_visitors || labels.map(function () { return null; });
  var chart = new uPlot(options(target.clientWidth),
    [xs, series.visitors, series.page_views, previous], target);
  window.addEventListener("resize", function () {
    chart.setSize({ width: target.clientWidth, height: 240 });
  });
})();
