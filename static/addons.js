// Add-ons in the generate form: a LoRA picked into the prompt as <lora:name:weight>, an embedding
// into either prompt, only those of the checkpoint's family offered; the ControlNet unit's map
// previewed from the server (the same preprocessor the job runs) before submitting.
(function () {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const field = (name) => form.elements[name];
  const $ = (id) => document.getElementById(id);
  const sizes = JSON.parse($("checkpoint-sizes").textContent);

  function append(name, text) {
    const box = field(name);
    box.value = box.value.trim() ? `${box.value.trimEnd()}, ${text}` : text;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }
  function byFamily() {
    const family = (sizes[field("checkpoint").value] || {}).family;
    for (const select of [$("lora-pick"), $("embedding-pick")].filter(Boolean)) {
      for (const option of select.options) option.hidden = option.dataset.family !== family;
      if (select.selectedOptions[0] && select.selectedOptions[0].hidden) {
        const first = [...select.options].find((o) => !o.hidden);
        select.value = first ? first.value : "";
      }
    }
    showTrigger();
  }
  function showTrigger() {
    const option = $("lora-pick") && $("lora-pick").selectedOptions[0];
    $("lora-trigger").textContent = option && option.dataset.trigger ? `Trained on: ${option.dataset.trigger}` : "";
  }
  if ($("lora-pick")) {
    $("lora-add").addEventListener("click", () => {
      if ($("lora-pick").value) append("prompt", `<lora:${$("lora-pick").value}:${Number($("lora-weight").value) || 1}>`);
    });
    $("lora-pick").addEventListener("change", showTrigger);
  }
  if ($("embedding-pick")) {
    $("embedding-prompt").addEventListener("click", () => { if ($("embedding-pick").value) append("prompt", $("embedding-pick").value); });
    $("embedding-negative").addEventListener("click", () => {
      if ($("embedding-pick").value) append("negative_prompt", $("embedding-pick").value);
    });
  }
  field("checkpoint").addEventListener("change", byFamily);
  byFamily();
  if (!field("cn_model")) return;  // no ControlNet in the library

  function canny() {
    for (const name of ["cn_threshold_a", "cn_threshold_b"]) field(name).closest(".field").hidden = field("cn_module").value !== "canny";
  }
  field("cn_module").addEventListener("change", canny);
  canny();
  if ($("cn-gallery-remove")) {
    $("cn-gallery-remove").addEventListener("click", () => { field("cn_image_id").value = ""; $("cn-gallery").hidden = true; });
  }
  $("cn-preview").addEventListener("click", async () => {
    const data = new FormData();
    for (const name of ["csrfmiddlewaretoken", "cn_image_id", "init_image_id", "cn_module", "cn_threshold_a", "cn_threshold_b"]) {
      if (field(name) && field(name).value) data.append(name, field(name).value);
    }
    for (const name of ["cn_image", "init_image"]) if (field(name).files[0]) data.append(name, field(name).files[0]);
    const error = $("cn-error"), map = $("cn-map");
    const response = await fetch(form.dataset.controlMap, { method: "POST", body: data, credentials: "same-origin" });
    const answer = await response.json().catch(() => ({ error: "The preview failed; try again." }));
    error.textContent = answer.error || "";
    error.hidden = !answer.error;
    map.hidden = !answer.image;
    if (answer.image) map.src = answer.image;
  });
})();
