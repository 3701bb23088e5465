// Copy buttons: data-copy="text", or data-copy-from="element id". Shown only where they work.
(function () {
  for (const button of document.querySelectorAll("[data-copy], [data-copy-from]")) {
    if (!navigator.clipboard) continue;
    button.hidden = false;
    const label = button.textContent;
    button.addEventListener("click", async () => {
      const source = button.dataset.copyFrom && document.getElementById(button.dataset.copyFrom);
      await navigator.clipboard.writeText(source ? source.textContent : button.dataset.copy);
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }
})();
