// Start from an image: pick a file (or arrive with a gallery image), paint a mask over it with
// mouse, pen or finger (brush, eraser, undo, invert, clear), extend it for outpainting, and send
// the mask as a PNG (white: repaint) with the form. Without paint, the job is img2img.
(function () {
  const form = document.getElementById("generate-form");
  const paint = document.getElementById("paint");
  if (!form || !paint) return;
  const field = (name) => form.elements[name];
  const preview = document.getElementById("start-preview");
  const canvas = document.getElementById("mask-canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const size = document.getElementById("brush-size");
  const eraseButton = document.getElementById("brush-erase");
  const history = [];
  let erasing = false, last = null, painted = false;

  function fitForm(width, height) {
    // The job's size follows the starting image, as submit.default_size makes it.
    const shrink = Math.min(1, Number(form.dataset.maxSide) / Math.max(width, height));
    field("width").value = Math.max(256, Math.floor(width * shrink / 8) * 8);
    field("height").value = Math.max(256, Math.floor(height * shrink / 8) * 8);
    form.dispatchEvent(new Event("input"));
  }
  function showImage(src, keepMask) {
    const old = keepMask ? snapshot() : null;
    preview.onload = () => {
      canvas.width = preview.naturalWidth;
      canvas.height = preview.naturalHeight;
      if (old) ctx.putImageData(old, 0, 0);
      paint.hidden = false;
      fitForm(canvas.width, canvas.height);
    };
    preview.src = src;
  }
  const snapshot = () => ctx.getImageData(0, 0, canvas.width, canvas.height);
  function remember() {
    history.push(snapshot());
    if (history.length > 30) history.shift();
  }

  field("init_image").addEventListener("change", () => {
    const file = field("init_image").files[0];
    if (!file) return;
    field("init_image_id").value = "";
    const reader = new FileReader();
    reader.onload = () => { history.length = 0; painted = false; showImage(reader.result, false); };
    reader.readAsDataURL(file);
  });
  if (preview.getAttribute("src")) showImage(preview.src, false);

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  }
  function stroke(to) {
    ctx.globalCompositeOperation = erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Number(size.value) * canvas.width / canvas.getBoundingClientRect().width;
    ctx.beginPath();
    ctx.moveTo(...(last || to));
    ctx.lineTo(...to);
    ctx.stroke();
    last = to;
    painted = true;
  }
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    remember();
    last = null;
    stroke(point(event));
  });
  canvas.addEventListener("pointermove", (event) => { if (last) stroke(point(event)); });
  for (const name of ["pointerup", "pointercancel"]) canvas.addEventListener(name, () => { last = null; });

  eraseButton.addEventListener("click", () => {
    erasing = !erasing;
    eraseButton.setAttribute("aria-pressed", String(erasing));
  });
  document.getElementById("mask-undo").addEventListener("click", () => {
    if (history.length) ctx.putImageData(history.pop(), 0, 0);
  });
  document.getElementById("mask-clear").addEventListener("click", () => {
    remember();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
  });
  document.getElementById("mask-invert").addEventListener("click", () => {
    remember();
    const data = snapshot();
    for (let i = 0; i < data.data.length; i += 4) {
      data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
      data.data[i + 3] = 255 - data.data[i + 3];
    }
    ctx.putImageData(data, 0, 0);
    painted = true;
  });
  document.getElementById("start-remove").addEventListener("click", () => {
    field("init_image").value = "";
    field("init_image_id").value = "";
    preview.removeAttribute("src");
    paint.hidden = true;
    form.dispatchEvent(new Event("input"));
  });

  function hasMask() {
    const data = snapshot().data;
    for (let i = 3; i < data.length; i += 4) if (data[i]) return true;
    return false;
  }
  function maskCanvas() {
    // White where painted, black elsewhere, at the starting image's size.
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const octx = out.getContext("2d");
    const data = snapshot();
    for (let i = 0; i < data.data.length; i += 4) {
      const v = data.data[i + 3] >= 128 ? 255 : 0;
      data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
      data.data[i + 3] = 255;
    }
    octx.putImageData(data, 0, 0);
    return out;
  }
  function setFile(input, blob, name) {
    const files = new DataTransfer();
    files.items.add(new File([blob], name, { type: "image/png" }));
    input.files = files.files;
  }

  document.getElementById("outpaint").addEventListener("click", () => {
    const [l, r, u, d] = ["left", "right", "up", "down"].map((s) => Math.max(0, Number(document.getElementById(`out-${s}`).value) || 0));
    if (!(l + r + u + d) || !preview.naturalWidth) return;
    const picture = document.createElement("canvas");
    picture.width = preview.naturalWidth + l + r;
    picture.height = preview.naturalHeight + u + d;
    const pctx = picture.getContext("2d");
    pctx.fillStyle = "#808080";
    pctx.fillRect(0, 0, picture.width, picture.height);
    pctx.drawImage(preview, l, u);
    // The new mask: the added border, plus whatever was painted, moved with the picture.
    const mask = document.createElement("canvas");
    mask.width = picture.width;
    mask.height = picture.height;
    const mctx = mask.getContext("2d");
    mctx.fillStyle = "#fff";
    mctx.fillRect(0, 0, mask.width, mask.height);
    mctx.clearRect(l, u, preview.naturalWidth, preview.naturalHeight);
    mctx.drawImage(canvas, l, u);
    field("inpainting_fill").value = "0";  // fill: start the new area from the colours around it
    picture.toBlob((blob) => {
      setFile(field("init_image"), blob, "outpaint.png");
      field("init_image_id").value = "";
      preview.onload = () => {
        canvas.width = mask.width;
        canvas.height = mask.height;
        ctx.drawImage(mask, 0, 0);
        painted = true;
        fitForm(mask.width, mask.height);
      };
      preview.src = picture.toDataURL("image/png");
    }, "image/png");
  });

  form.addEventListener("submit", (event) => {
    if (paint.hidden || !painted || !hasMask() || form.dataset.maskReady) return;
    event.preventDefault();
    maskCanvas().toBlob((blob) => {
      setFile(field("mask"), blob, "mask.png");
      form.dataset.maskReady = "1";
      form.submit();
    }, "image/png");
  });
})();
