// Image grids: rows justified by each picture's aspect ratio, and a lightbox: a click shows the
// picture large; Left/Right go to the neighbours, Escape (or the close button) returns to the grid.
// Without JavaScript the grid is a plain grid and each picture links to its page.
(function () {
  const grid = document.querySelector("[data-lightbox]");
  if (!grid) return;
  grid.classList.add("justified");
  for (const item of grid.children) {
    const ratio = Number(item.dataset.width) / Number(item.dataset.height) || 1;
    item.style.flexGrow = ratio;
    item.style.flexBasis = `${Math.round(200 * ratio)}px`;
  }
  const links = [...grid.querySelectorAll("a[data-full]")];
  const box = document.createElement("div");
  box.className = "lightbox";
  box.hidden = true;
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-modal", "true");
  box.setAttribute("aria-label", "Image");
  box.innerHTML = '<img alt=""><p><button type="button" class="close">Close</button> <a class="open">Open its page</a> · ' +
    '<span class="where"></span></p>';
  document.body.append(box);
  const img = box.querySelector("img"), open = box.querySelector(".open"), where = box.querySelector(".where");
  let at = -1, opener = null;

  function show(k) {
    at = (k + links.length) % links.length;
    img.src = links[at].dataset.full;
    img.alt = links[at].querySelector("img").alt;
    open.href = links[at].href;
    where.textContent = `${at + 1} of ${links.length} · ← → to browse, Esc to close`;
    box.hidden = false;
    box.querySelector(".close").focus();
  }
  function close() {
    box.hidden = true;
    if (opener) opener.focus();
  }
  links.forEach((link, k) => link.addEventListener("click", (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey) return;  // a new tab, as the person asked
    e.preventDefault();
    opener = link;
    show(k);
  }));
  box.querySelector(".close").addEventListener("click", close);
  box.addEventListener("click", (e) => { if (e.target === box) close(); });
  document.addEventListener("keydown", (e) => {
    if (box.hidden) return;
    if (e.key === "Escape") close();
    else if (e.key === "ArrowRight") show(at + 1);
    else if (e.key === "ArrowLeft") show(at - 1);
  });
})();
