// Channel form: "Fetch models" asks the provider through POST /api/channels/fetch-models and fills the models
// field; the scope's group and owner fields show only for the scope that needs them. Without this script the
// button posts the form, which comes back with the models filled, and both fields stay shown.
"use strict";

const form = document.querySelector("form[data-channel-form]");
const button = form && form.querySelector("[data-fetch-models]");
const models = document.getElementById("models");

if (button && models) {
  // The field's error line (the page's, or a new one) with the button after it: beside the field it fills,
  // and a plain button, so that Enter in the form still saves it.
  let problem = document.getElementById("models-error");
  if (!problem) {
    problem = document.createElement("p");
    problem.className = "field-error";
    problem.id = "models-error";
    problem.hidden = true;
    models.closest(".field").append(problem);
  }
  problem.setAttribute("role", "alert");
  button.type = "button";
  button.removeAttribute("name");
  problem.after(button);

  const text = (id) => (document.getElementById(id)?.value || "").trim();
  const show = (message) => {
    problem.textContent = message;
    problem.hidden = !message;
    models.closest(".field").classList.toggle("invalid", Boolean(message));
    if (message) {
      models.setAttribute("aria-invalid", "true");
      models.setAttribute("aria-describedby", problem.id);
    } else {
      models.removeAttribute("aria-invalid");
    }
  };

  button.addEventListener("click", async () => {
    const body = {};
    const channelId = form.dataset.channelId || form.elements.keys_from?.value;
    if (channelId) body.channel_id = channelId;
    if (text("type")) body.type = text("type");
    if (text("base_url")) body.base_url = text("base_url");
    if (text("api_version")) body.api_version = text("api_version");
    const key = text("keys").split(/[\n,]/)[0]?.trim();
    if (key) body.key = key;
    button.disabled = true;
    button.textContent = "Fetching…";
    try {
      const response = await fetch("/api/channels/fetch-models", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.elements.csrf_token.value },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        models.value = answer.models.join("\n");
        show("");
        models.focus();
      } else {
        show(answer.detail || `Could not fetch the models (HTTP ${response.status}).`);
      }
    } catch {
      show("Could not reach Lyss; check the connection and try again.");
    } finally {
      button.disabled = false;
      button.textContent = "Fetch models";
    }
  });
}

const scope = document.getElementById("scope");
if (scope) {
  const only = { group_id: "group", owner_id: "personal" };
  const follow = () => {
    for (const [id, needed] of Object.entries(only)) {
      const field = document.getElementById(id)?.closest(".field");
      // A field with an error stays shown, so that the message is seen.
      if (field && !field.classList.contains("invalid")) field.hidden = scope.value !== needed;
    }
  };
  scope.addEventListener("change", follow);
  follow();
}
