// Lyss chat page: sends a message through the chat API and shows the answer as it streams in.
// Answers are shown as a small Markdown subset built from DOM text nodes: nothing the model writes becomes HTML.
"use strict";

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|\[([^\]\n]+)\]\(([^)\s]+)\)/g;

function appendInline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    parent.append(text.slice(last, match.index));
    if (match[1]) {
      const code = document.createElement("code");
      code.textContent = match[1].slice(1, -1);
      parent.append(code);
    } else if (match[2]) {
      const strong = document.createElement("strong");
      strong.textContent = match[2].slice(2, -2);
      parent.append(strong);
    } else if (/^https?:\/\//i.test(match[4])) {
      const link = document.createElement("a");
      link.href = match[4];
      link.rel = "noopener noreferrer nofollow";
      link.textContent = match[3];
      parent.append(link);
    } else {
      // Any other scheme (javascript:, data:) stays plain text.
      parent.append(match[0]);
    }
    last = match.index + match[0].length;
  }
  parent.append(text.slice(last));
}

const LIST_ITEM = /^\s*(?:[-*]|(\d+)\.)\s+/;

function appendBlock(parent, lines) {
  if (lines.every((line) => LIST_ITEM.test(line))) {
    const list = document.createElement(LIST_ITEM.exec(lines[0])[1] ? "ol" : "ul");
    for (const line of lines) {
      const item = document.createElement("li");
      appendInline(item, line.replace(LIST_ITEM, ""));
      list.append(item);
    }
    parent.append(list);
    return;
  }
  const paragraph = document.createElement("p");
  lines.forEach((line, index) => {
    if (index > 0) paragraph.append(document.createElement("br"));
    appendInline(paragraph, line);
  });
  parent.append(paragraph);
}

function renderMarkdown(target, text) {
  const fragment = document.createDocumentFragment();
  let block = [];
  let code = null;
  const flush = () => {
    if (block.length) appendBlock(fragment, block);
    block = [];
  };
  for (const line of text.split("\n")) {
    if (line.trim().startsWith("```")) {
      if (code === null) {
        flush();
        code = [];
      } else {
        const pre = document.createElement("pre");
        pre.append(document.createElement("code"));
        pre.firstChild.textContent = code.join("\n");
        fragment.append(pre);
        code = null;
      }
    } else if (code !== null) {
      code.push(line);
    } else if (line.trim() === "") {
      flush();
    } else {
      block.push(line);
    }
  }
  if (code !== null) {
    // A code block still arriving (or never closed) shows as code so far.
    const pre = document.createElement("pre");
    pre.append(document.createElement("code"));
    pre.firstChild.textContent = code.join("\n");
    fragment.append(pre);
  }
  flush();
  target.replaceChildren(fragment);
  target.classList.add("rendered");
}

function renderAll(root) {
  for (const node of root.querySelectorAll("[data-markdown]")) {
    renderMarkdown(node, node.textContent);
  }
}

// Server-sent events from a fetch body: yields {event, data} as each arrives.
async function* serverSentEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function message(role) {
  const article = document.createElement("article");
  article.className = `msg ${role}`;
  const text = document.createElement("div");
  text.className = "md";
  article.append(text);
  return article;
}

function note(article, text, kind) {
  const hint = document.createElement("p");
  hint.className = "hint";
  const badge = document.createElement("span");
  badge.className = `badge ${kind}`;
  badge.textContent = text;
  hint.append(badge);
  article.append(hint);
}

async function refreshTranscript() {
  const response = await fetch(window.location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("transcript");
  if (!fresh) return;
  renderAll(fresh);
  document.getElementById("transcript").replaceWith(fresh);
}

function startChat(root) {
  renderAll(root);
  // The conversation list folds away on narrow screens only (as the menu does).
  const list = root.querySelector(".chat-list-box");
  if (list && window.matchMedia("(min-width: 641px)").matches) list.open = true;
  const box = document.getElementById("message");
  if (!box) return;
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const problem = document.getElementById("composer-error");
  let running = null;

  const showProblem = (text) => {
    problem.textContent = text;
    problem.hidden = !text;
  };

  const file = document.getElementById("attachment");
  const headers = { "X-CSRF-Token": root.dataset.csrf };
  const apiPath = `/api/conversations/${root.dataset.conversation}`;

  // The chosen file, uploaded to the conversation: its id, or null (and the reason shown) if refused.
  async function upload() {
    const form = new FormData();
    form.append("file", file.files[0]);
    const response = await fetch(`${apiPath}/attachments`, {
      method: "POST",
      credentials: "same-origin",
      headers,
      body: form,
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      showProblem(answer.detail || `The file was not attached (${response.status}).`);
      return null;
    }
    return answer.id;
  }

  async function sendMessage() {
    const content = box.value;
    if (running || !content.trim()) return;
    showProblem("");
    const attachmentIds = [];
    if (file.files.length) {
      const id = await upload();
      if (id === null) return;
      attachmentIds.push(id);
    }
    document.getElementById("transcript-empty")?.remove();
    const question = message("user");
    question.firstChild.textContent = content;
    if (attachmentIds.length) note(question, `Attached: ${file.files[0].name}`, "");
    file.value = "";
    const answer = message("assistant");
    answer.classList.add("streaming");
    document.getElementById("transcript").append(question, answer);
    box.value = "";
    running = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    let text = "";
    let finished = false;
    try {
      const response = await fetch(`${apiPath}/messages`, {
        method: "POST",
        credentials: "same-origin",
        headers: { ...headers, "Content-Type": "application/json" },
        body: JSON.stringify({ content, stream: true, attachment_ids: attachmentIds }),
        signal: running.signal,
      });
      if (!response.ok) {
        const refusal = await response.json().catch(() => ({}));
        answer.remove();
        showProblem(refusal.detail || refusal.message || `The message was not sent (${response.status}).`);
        return;
      }
      for await (const { event, data } of serverSentEvents(response.body)) {
        if (event === "delta") {
          text += data.content;
          renderMarkdown(answer.firstChild, text);
        } else if (event === "error") {
          note(answer, data.message, "bad");
        } else if (event === "done") {
          finished = true;
        }
      }
      // The stored answer, with its tokens and the memories it used, replaces the streamed copy.
      if (finished) await refreshTranscript();
    } catch (failure) {
      if (failure.name === "AbortError") note(answer, "stopped", "warn");
      else note(answer, "The connection broke off; what arrived is kept.", "bad");
    } finally {
      answer.classList.remove("streaming");
      running = null;
      send.disabled = false;
      stop.hidden = true;
    }
  }

  send.addEventListener("click", sendMessage);
  stop.addEventListener("click", () => running?.abort());
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
}

const chat = document.getElementById("chat");
if (chat) startChat(chat);
