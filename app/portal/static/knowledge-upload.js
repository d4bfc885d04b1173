// Knowledge base page: files dropped on the zone (or chosen) are uploaded one by one with a progress bar each,
// then the documents list is refreshed. Without this script the form posts one file as plain multipart.
"use strict";

const form = document.getElementById("upload-form");
if (form) {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file");
  const list = document.getElementById("upload-list");
  const maxBytes = Number(form.dataset.maxBytes);
  const allowed = input.accept.split(",").map((extension) => extension.trim().toLowerCase());
  const csrf = form.querySelector('input[name="csrf_token"]').value;
  let queue = Promise.resolve();

  input.multiple = true;
  document.getElementById("upload-button").hidden = true;

  // What a page the server answered with says: its error next to the drop zone, else its notice.
  function said(page) {
    for (const selector of ["#file-error", "main .notice.error", "main .notice.ok", "main p"]) {
      const message = page.querySelector(selector);
      if (message) return message.textContent.trim();
    }
    return "";
  }

  function row(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    const percent = document.createElement("span");
    percent.className = "hint";
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const message = document.createElement("span");
    message.className = "said";
    item.append(name, percent, bar, message);
    list.append(item);
    return { item, percent, bar, message };
  }

  function finish(view, text, ok) {
    view.bar.remove();
    view.percent.textContent = "";
    view.message.textContent = text;
    view.message.classList.add(ok ? "ok" : "bad");
  }

  function refreshDocuments(page) {
    const fresh = page.getElementById("documents-live");
    const current = document.getElementById("documents-live");
    if (fresh && current) {
      current.replaceWith(fresh);
      document.dispatchEvent(new CustomEvent("lyss:replaced"));
    }
  }

  function upload(file) {
    const view = row(file);
    const extension = file.name.includes(".") ? "." + file.name.split(".").pop().toLowerCase() : "";
    if (!allowed.includes(extension)) {
      finish(view, `Files of type '${extension || "none"}' are not taken; send ${allowed.join(", ")}.`, false);
      return Promise.resolve();
    }
    if (file.size > maxBytes) {
      finish(view, `Too large: an upload may have at most ${maxBytes} bytes.`, false);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const body = new FormData();
      body.append("csrf_token", csrf);
      body.append("file", file);
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const done = Math.round((event.loaded / event.total) * 100);
        view.bar.value = done;
        view.percent.textContent = `${done}%`;
      });
      request.addEventListener("load", () => {
        const page = new DOMParser().parseFromString(request.responseText, "text/html");
        const ok = request.status < 400;
        finish(view, said(page) || (ok ? "Uploaded." : `Refused (${request.status}).`), ok);
        if (ok) refreshDocuments(page);
        resolve();
      });
      request.addEventListener("error", () => {
        finish(view, "The upload did not reach the server; check the connection and try again.", false);
        resolve();
      });
      request.send(body);
    });
  }

  function uploadAll(files) {
    for (const file of Array.from(files)) queue = queue.then(() => upload(file));
  }

  input.addEventListener("change", () => {
    uploadAll(input.files);
    input.value = "";
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    uploadAll(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    uploadAll(event.dataTransfer.files);
  });
}
