// The generate form: size presets (SDXL's own for SDXL, FLUX and SD 3.5 checkpoints), a checkpoint's own size
// and steps when it is picked, the refiner only for SDXL, FLUX.1's own fields (no negative prompt, no
// CFG: [dev]'s distilled guidance), and the cost of the current settings before submitting.
// The formula mirrors generation.services.quote_cost; the server's own quote is what is charged.
(function () {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const field = (name) => form.elements[name];
  const preset = document.getElementById("size-preset");
  const unit = Number(form.dataset.costUnit);

  function quote() {
    // As GenerationRequest.passes: img2img runs steps x strength; hires fix adds its second pass.
    const n = Number(field("num_images").value), w = Number(field("width").value),
          h = Number(field("height").value), s = Number(field("steps").value),
          strength = Number(field("denoising_strength").value || 0.75);
    const fromImage = !document.getElementById("paint").hidden;
    document.getElementById("hires").hidden = fromImage;  // hires fix is for images made from text
    if (fromImage) field("enable_hr").checked = false;
    let pixelSteps = w * h * (fromImage ? Math.floor(s * strength) : s);
    if (!fromImage && field("enable_hr").checked) {
      const scale = Number(field("hr_scale").value || 2);
      const hw = Math.floor(w * scale / 8) * 8, hh = Math.floor(h * scale / 8) * 8;
      pixelSteps += hw * hh * Math.floor((Number(field("hr_second_pass_steps").value) || s) *
                                         Number(field("hr_denoising_strength").value || 0.7));
    }
    // A ControlNet unit adds half of every step's work (credits.quote_cost).
    const units = field("cn_model") && field("cn_model").value ? 1 : 0;
    const on = [];  // what is on further down the form, said beside the button
    if (fromImage) on.push(`from a starting image, denoising ${strength}`);
    if (!fromImage && field("enable_hr").checked) on.push(`hires fix ×${field("hr_scale").value || 2}`);
    if (units) on.push(`ControlNet ${field("cn_model").selectedOptions[0].text}`);
    const cells = plotCells(), count = Number(field("batch_count").value) || 1;
    if (count > 1) on.push(`${count} jobs`);
    if (cells !== 1) on.push(`an X/Y/Z plot of ${Number.isFinite(cells) ? cells : "several"} cells`);
    document.getElementById("extras").textContent = on.length ? `· with ${on.join(", ")}` : "";
    // A plot's cells may differ in steps or size: this is the estimate at the form's own settings.
    const cost = Math.max(1, Math.ceil((n * pixelSteps * (2 + units)) / 2 / unit)) * cells * count;
    const out = document.getElementById("cost");
    out.textContent = Number.isFinite(cost) ? cost : "–";
    document.getElementById("cost-word").textContent = cost === 1 ? "credit" : "credits";
    const team = field("team") && field("team").value !== "own" ? field("team").selectedOptions[0] : null;
    document.getElementById("own-pool").hidden = Boolean(team);
    document.getElementById("team-pool").hidden = !team;
    if (team) document.getElementById("team-pool-balance").textContent = team.dataset.balance;
    out.classList.toggle("error", cost > Number(team ? team.dataset.balance : form.dataset.balance));
  }
  function plotCells() {
    // Each axis's comma-separated values; a range (1-5, 10-30 (+10)) is counted by the server.
    let cells = 1;
    for (const axis of ["x", "y", "z"]) {
      if (field(`plot_${axis}_type`).value === "Nothing") continue;
      const values = field(`plot_${axis}_values`).value.split(",").filter((v) => v.trim());
      if (values.some((v) => /\d\s*-\s*[\d.]/.test(v.trim().slice(1)))) return NaN;
      cells *= Math.max(1, values.length);
    }
    return cells;
  }
  const sizes = JSON.parse(document.getElementById("checkpoint-sizes").textContent);
  const checkpoint = () => sizes[field("checkpoint").value] || { xl: false };

  function syncPreset() {
    const value = `${field("width").value}x${field("height").value}`;
    const family = checkpoint().xl ? "sdxl" : "sd";
    for (const option of preset.options) option.hidden = option.dataset.family && option.dataset.family !== family;
    preset.value = [...preset.options].some((o) => o.value === value && !o.hidden) ? value : "custom";
    const xl = checkpoint().xl && !checkpoint().flow;
    for (const name of ["refiner", "refiner_switch_at"]) field(name).closest(".field").hidden = !xl;
    if (!xl) field("refiner").value = "";
    syncFlux();
  }
  function syncFlux() {
    // FLUX.1 takes no negative prompt and runs no CFG; [dev] has its distilled guidance. FLUX.1, SD 3.5
    // and Z-Image run Euler (a), without clip skip; SD 3.5 and Z-Image without ControlNet. Each checkpoint is offered the VAEs of its latents.
    const flux = checkpoint().flux;
    const flow = Boolean(checkpoint().flow);
    for (const name of ["negative_prompt", "guidance_scale"]) field(name).closest(".field").hidden = Boolean(flux);
    field("clip_skip").closest(".field").hidden = flow;
    field("distilled_guidance_scale").closest(".field").hidden = flux !== "flux-dev";
    if (document.getElementById("controlnet")) document.getElementById("controlnet").hidden = flow && !flux;
    for (const option of field("vae").options) {
      option.hidden = Boolean(option.value) && option.dataset.channels !== (flow ? "16" : "4");
    }
    if (field("vae").selectedOptions[0].hidden) field("vae").value = "";
    for (const option of field("scheduler").options) option.hidden = flow && !option.value.startsWith("Euler");
    if (!flow) return;
    if (flux) field("negative_prompt").value = "";
    if (field("scheduler").selectedOptions[0].hidden) field("scheduler").value = "Euler";
  }
  field("checkpoint").addEventListener("change", () => {
    field("width").value = checkpoint().width;
    field("height").value = checkpoint().height;
    field("steps").value = checkpoint().steps;
    field("guidance_scale").value = checkpoint().guidance;
    syncPreset();
    quote();
  });
  preset.addEventListener("change", () => {
    if (preset.value === "custom") return field("width").focus();
    const [w, h] = preset.value.split("x");
    field("width").value = w;
    field("height").value = h;
    quote();
  });
  form.addEventListener("input", (e) => { if (e.target !== preset) syncPreset(); quote(); });
  // Ctrl/Cmd+Enter generates from anywhere in the form.
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("seed-random").addEventListener("click", () => { field("seed").value = -1; });
  const reuse = document.getElementById("seed-reuse");
  if (reuse) reuse.addEventListener("click", () => { field("seed").value = reuse.dataset.seed; });
  // Lock: the seed stays as typed from one job to the next (remembered in this browser).
  const lock = document.getElementById("seed-lock");
  if (localStorage.getItem("seed-lock") !== null) {
    lock.checked = true;
    field("seed").value = localStorage.getItem("seed-lock");
  }
  const remember = () => { if (lock.checked) localStorage.setItem("seed-lock", field("seed").value); else localStorage.removeItem("seed-lock"); };
  lock.addEventListener("change", remember);
  field("seed").addEventListener("input", () => { if (lock.checked) remember(); });
  const history = document.getElementById("recent-prompts");
  if (history) {
    history.addEventListener("change", () => {
      if (!history.value) return;
      field("prompt").value = history.value;
      history.value = "";
      field("prompt").focus();
    });
  }
  form.addEventListener("change", quote);
  syncPreset();
  quote();
})();
