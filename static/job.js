// The live view of one job: progress, the preview updating in place, then the images.
// Every message has the shape the server's events have; "state" is sent first on (re)connect.
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const done = new Set(["succeeded", "failed", "cancelled"]);
  let status = root.dataset.status;

  function setStatus(text) {
    const ended = done.has(text) && !done.has(status);
    status = text;
    $("status").querySelector("strong").textContent = text;
    // Everything else on the page that shows this job's state or the balance follows too.
    for (const cell of document.querySelectorAll(`[data-job-status="${root.dataset.job}"]`)) {
      cell.textContent = text;
      cell.className = `status ${text}`;
    }
    if (done.has(text) && $("cancel-form")) $("cancel-form").hidden = true;
    if (ended) refreshBalance();
  }
  async function refreshBalance() {
    const response = await fetch("/api/v1/credits/", { credentials: "same-origin" }).catch(() => null);
    if (!response || !response.ok) return;
    const { balance } = await response.json();
    for (const el of document.querySelectorAll("#balance, .balance-now")) el.textContent = balance;
  }
  function queued(m) {
    const n = m.position;
    $("eta").textContent = (n ? `Queued · ${n} job${n === 1 ? "" : "s"} ahead` : "Queued · next")
      + (m.eta ? ` · starts in about ${Math.ceil(m.eta)} s` : "");
  }
  function note(text) {
    $("note").textContent = text || "";
    $("note").hidden = !text;
  }
  function progress(step, total, eta) {
    if (total) { $("progress").max = total; $("progress").value = step; }
    $("eta").textContent = total ? `Step ${step} of ${total}` + (eta != null && step < total ? ` · about ${Math.ceil(eta)} s left` : "") : "";
  }
  function showImages(images) {
    $("preview").hidden = true;
    const box = $("images");
    // the same images again (the socket's state after the page drew them): keep what was unticked
    const unticked = new Set([...box.querySelectorAll("input[name=keep]")].filter((b) => !b.checked).map((b) => b.value));
    box.replaceChildren(...images.map((im) => {
      const figure = document.createElement("figure");
      const link = document.createElement("a");
      link.href = im.page;
      const img = document.createElement("img");
      img.src = im.thumbnail;
      img.dataset.full = im.url;
      img.alt = `Generated image, seed ${im.seed}`;
      link.append(img);
      const caption = document.createElement("figcaption");
      if (box.dataset.keep) {
        const label = document.createElement("label");
        const box_ = document.createElement("input");
        Object.assign(box_, { type: "checkbox", name: "keep", value: im.id, checked: !unticked.has(im.id) });
        label.append(box_, " Keep");
        caption.append(label, " · ");
      }
      const start = document.createElement("a");
      start.href = `/generate/?init=${im.id}`;
      start.textContent = "Use as starting image";
      caption.append(`Seed ${im.seed} · `, start);
      figure.append(link, caption);
      return figure;
    }));
    $("keep-form").hidden = false;
    comparable();
  }
  // Compare: the batch side by side at full size, each with its Keep box (the form's own), to keep
  // the best and discard the rest. Escape or Done closes it.
  function comparable() {
    $("compare").hidden = $("images").querySelectorAll("img[data-full]").length < 2;
  }
  const view = document.createElement("div");
  view.className = "compare-view";
  view.hidden = true;
  view.setAttribute("role", "dialog");
  view.setAttribute("aria-modal", "true");
  view.setAttribute("aria-label", "Compare the images");
  document.body.append(view);
  function closeCompare() {
    view.hidden = true;
    $("compare").setAttribute("aria-pressed", "false");
    $("compare").focus();
  }
  $("compare").addEventListener("click", () => {
    const done = document.createElement("button");
    done.type = "button";
    done.textContent = "Done comparing";
    done.addEventListener("click", closeCompare);
    const row = document.createElement("div");
    row.className = "compare-row";
    for (const figure of $("images").querySelectorAll("figure")) {
      const big = document.createElement("figure");
      const img = document.createElement("img");
      img.src = figure.querySelector("img").dataset.full;
      img.alt = figure.querySelector("img").alt;
      big.append(img);
      const keep = figure.querySelector("input[name=keep]");
      if (keep) {  // the same box as the form's, so "Keep the checked" keeps what was picked here
        const label = document.createElement("label");
        const box = document.createElement("input");
        Object.assign(box, { type: "checkbox", checked: keep.checked });
        box.addEventListener("change", () => { keep.checked = box.checked; });
        label.append(box, ` Keep (${img.alt.replace("Generated image, ", "")})`);
        big.append(label);
      }
      row.append(big);
    }
    view.replaceChildren(done, row);
    view.hidden = false;
    $("compare").setAttribute("aria-pressed", "true");
    done.focus();
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !view.hidden) closeCompare(); });
  comparable();
  // Discarding deletes for good: say how many first, and do nothing when every image is kept.
  $("keep-form").addEventListener("submit", (e) => {
    const boxes = [...$("keep-form").querySelectorAll("input[name=keep]")];
    const gone = boxes.filter((box) => !box.checked).length;
    if (!gone || !window.confirm(`Delete ${gone} of ${boxes.length} images for good? This can't be undone.`)) {
      e.preventDefault();
    }
  });
  function fail(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  const handlers = {
    state(m) {
      setStatus(m.status);
      progress(m.step, m.total);
      if (m.status === "queued") queued(m);
      if (m.preview) { $("preview").src = m.preview; $("preview").hidden = false; }
      if (m.images) showImages(m.images);
      if (m.status === "cancelled") note(m.error);
      else if (m.status === "failed") fail(m.error);
    },
    queued(m) { setStatus("queued"); queued(m); },
    started() { setStatus("running"); $("eta").textContent = "Starting…"; },
    progress(m) {
      setStatus("running");
      progress(m.step, m.total, m.eta);
      $("preview").src = m.preview;
      $("preview").hidden = false;
    },
    finished(m) { setStatus("succeeded"); progress(1, 1); $("eta").textContent = ""; showImages(m.images); },
    failed(m) { setStatus("failed"); fail(m.reason); },
    cancelled() { setStatus("cancelled"); $("preview").hidden = true; $("eta").textContent = ""; note("Cancelled; the credits are back."); },
  };

  let retry = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.socket}`);
    socket.onmessage = (e) => { const m = JSON.parse(e.data); (handlers[m.type] || (() => {}))(m); retry = 500; };
    socket.onclose = () => {
      if (done.has(status)) return;
      $("eta").textContent = "Reconnecting…";  // not a stale "seconds left" while nothing is heard
      setTimeout(connect, retry = Math.min(retry * 2, 8000));
    };
  }
  connect();
})();
