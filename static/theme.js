// The theme: the system's (prefers-color-scheme) unless the person picked one with the header's
// toggle, remembered in this browser. Loaded in <head> so a page never flashes the other theme.
(function () {
  const saved = localStorage.getItem("theme");
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
  const dark = () => (document.documentElement.dataset.theme
    || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light")) === "dark";
  document.addEventListener("DOMContentLoaded", () => {
    const toggle = document.getElementById("theme-toggle");
    if (!toggle) return;
    const show = () => {
      toggle.textContent = dark() ? "Light theme" : "Dark theme";
      toggle.setAttribute("aria-pressed", String(dark()));
    };
    toggle.hidden = false;
    show();
    toggle.addEventListener("click", () => {
      const next = dark() ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("theme", next);
      show();
    });
  });
})();
