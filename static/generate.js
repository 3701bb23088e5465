// The generate form: size presets, and the cost of the current settings before submitting.
// The formula mirrors generation.services.quote_cost; the server's own quote is what is charged.
(function () {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const field = (name) => form.elements[name];
  const preset = document.getElementById("size-preset");
  const unit = Number(form.dataset.costUnit);

  function quote() {
    const n = Number(field("num_images").value), w = Number(field("width").value),
          h = Number(field("height").value), s = Number(field("steps").value);
    const cost = Math.max(1, Math.ceil((n * w * h * s) / unit));
    const out = document.getElementById("cost");
    out.textContent = Number.isFinite(cost) ? cost : "–";
    out.classList.toggle("error", cost > Number(form.dataset.balance));
  }
  function syncPreset() {
    const value = `${field("width").value}x${field("height").value}`;
    preset.value = [...preset.options].some((o) => o.value === value) ? value : "custom";
  }
  preset.addEventListener("change", () => {
    if (preset.value === "custom") return field("width").focus();
    const [w, h] = preset.value.split("x");
    field("width").value = w;
    field("height").value = h;
    quote();
  });
  form.addEventListener("input", (e) => { if (e.target !== preset) syncPreset(); quote(); });
  syncPreset();
  quote();
})();
