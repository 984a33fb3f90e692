// The theme before the first paint (loaded in <head>, not deferred): the
// choice stored by app.js's theme button, else the system's. A script of
// its own, since the page's Content-Security-Policy allows no inline one.
(function () {
  var chosen = null;
  try {
    chosen = localStorage.getItem("sysmon-theme");
  } catch (e) {
    // Storage refused: the system's theme.
  }
  var dark = chosen === "dark" || (chosen !== "light" && window.matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
