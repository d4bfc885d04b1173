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

// The menu is a <details> holding two dropdown groups (more <details>). On a wide screen the menu stays
// open (its summary is hidden) and the groups are dropdowns, closed; on a phone the menu is a toggle and,
// once opened, shows both groups unfolded. Crossing the width in either direction re-applies this, so a
// menu opened on a phone does not stay open, or a dropdown hang, after the window is widened.
const menu = document.querySelector("details.menu");
const groups = Array.from(document.querySelectorAll("details.menu-group"));
const wide = window.matchMedia("(min-width: 641px)");
function layMenu() {
  if (!menu) return;
  menu.open = wide.matches;
  for (const group of groups) group.open = !wide.matches;
}
layMenu();
wide.addEventListener("change", layMenu);

// On a wide screen one dropdown at a time, closed by a click elsewhere or by Escape.
for (const group of groups) {
  group.addEventListener("toggle", () => {
    if (!wide.matches || !group.open) return;
    for (const other of groups) if (other !== group) other.open = false;
  });
}
document.addEventListener("click", (event) => {
  if (!wide.matches) return;
  for (const group of groups) if (group.open && !group.contains(event.target)) group.open = false;
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const open = groups.find((group) => group.open && wide.matches);
  if (open) {
    open.open = false;
    open.querySelector("summary").focus();
  } else if (menu && menu.open && !wide.matches) {
    menu.open = false;
    menu.querySelector("summary").focus();
  }
});

// A table wider than its box scrolls inside it; the box then says so (the stylesheet shows the line).
function markScrollingTables() {
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    wrap.toggleAttribute("data-scrolls", wrap.scrollWidth > wrap.clientWidth + 1);
  }
}
markScrollingTables();
window.addEventListener("resize", markScrollingTables);

// Pages that show changing state (jobs, documents being ingested) reload that part every few seconds while
// visible. A script that replaces such a part itself (an upload) says so with a `lyss:replaced` event.
let polling = null;
function watchLive() {
  const live = document.querySelector("[data-refresh]");
  if (!live || polling) return;
  const seconds = Number(live.dataset.refresh) || 3;
  polling = setInterval(async () => {
    if (document.hidden) return;
    const response = await fetch(window.location.href);
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(live.id);
    const current = document.getElementById(live.id);
    if (fresh && current) current.replaceWith(fresh);
    markScrollingTables();
    // Finished (the fresh copy no longer asks to be refreshed): stop polling.
    if (!fresh || !fresh.dataset.refresh) {
      clearInterval(polling);
      polling = null;
    }
  }, seconds * 1000);
}
watchLive();
document.addEventListener("lyss:replaced", () => {
  markScrollingTables();
  watchLive();
});

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
