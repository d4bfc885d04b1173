// Lyss portal: the little JavaScript the pages use. Everything works without it except copy and live jobs.
"use strict";

document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    navigator.clipboard.writeText(source.textContent.trim()).then(() => {
      copy.textContent = "Copied";
    });
  }
});

document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// The menu is a <details>: open on wide screens, a toggle on narrow ones.
const menu = document.querySelector("details.menu");
if (menu && window.matchMedia("(min-width: 641px)").matches) {
  menu.open = true;
}

// Pages that show changing state (jobs) reload their table every few seconds while visible.
const live = document.querySelector("[data-refresh]");
if (live) {
  const seconds = Number(live.dataset.refresh) || 3;
  const timer = setInterval(async () => {
    if (document.hidden) return;
    const response = await fetch(window.location.href);
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(live.id);
    const current = document.getElementById(live.id);
    if (fresh && current) current.replaceWith(fresh);
    // Finished (the fresh copy no longer asks to be refreshed): stop polling.
    if (!fresh || !fresh.dataset.refresh) clearInterval(timer);
  }, seconds * 1000);
}

// Channel form: choosing a type fills in its default base URL (unless one was typed by hand).
const presets = document.querySelector("select[data-presets]");
const baseUrl = document.getElementById("base_url");
if (presets && baseUrl) {
  let preset = presets.selectedOptions[0]?.dataset.baseUrl || "";
  if (!baseUrl.value) baseUrl.value = preset;
  presets.addEventListener("change", () => {
    const next = presets.selectedOptions[0]?.dataset.baseUrl || "";
    if (!baseUrl.value || baseUrl.value === preset) baseUrl.value = next;
    preset = next;
  });
}
