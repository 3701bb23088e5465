// Drop an image anywhere on the studio page: start img2img from it (it goes into the starting-image
// field, as if picked there), or read the A1111 parameters it carries into the form (PNG Info).
(function () {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let dropped = null;

  function error(text) {
    $("drop-error").textContent = text || "";
    $("drop-error").hidden = !text;
  }
  document.addEventListener("dragover", (e) => {
    if ([...e.dataTransfer.types].includes("Files")) e.preventDefault();
  });
  document.addEventListener("drop", (e) => {
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (!file) return;
    e.preventDefault();
    dropped = file;
    $("drop-name").textContent = file.name;
    error("");
    $("drop-choice").hidden = false;
    $("drop-start").focus();
  });
  $("drop-cancel").addEventListener("click", () => { $("drop-choice").hidden = true; dropped = null; });
  $("drop-start").addEventListener("click", () => {
    const files = new DataTransfer();
    files.items.add(dropped);
    const input = form.elements["init_image"];
    input.files = files.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    $("drop-choice").hidden = true;
  });
  $("drop-read").addEventListener("click", async () => {
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.elements["csrfmiddlewaretoken"].value);
    data.append("image", dropped);
    const response = await fetch(form.dataset.pngInfo, { method: "POST", body: data, credentials: "same-origin" });
    const answer = await response.json().catch(() => ({ error: "The image could not be read." }));
    if (answer.error) return error(answer.error);
    for (const [name, value] of Object.entries(answer.fields)) {
      const input = form.elements[name];
      if (input && input.type === "checkbox") input.checked = Boolean(value);
      else if (input) input.value = value;
    }
    form.dispatchEvent(new Event("input"));
    $("drop-choice").hidden = true;
    $("drop-note").textContent = answer.read;  // what was filled in, and what the studio has no match for
    $("drop-parameters").textContent = answer.parameters;
    $("drop-result").hidden = false;
  });
})();
