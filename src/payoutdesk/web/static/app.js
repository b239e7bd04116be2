// payoutdesk pages: the few behaviours every page shares. An area adds its own script (actions.js, files.js,
// settings.js). No inline script anywhere: the content security policy allows only these files.
"use strict";

window.payoutdesk = {
  // the form token of the signed-in user, for a script's own posts (sent as X-CSRF-Token)
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  // POST JSON (or FormData) with the form token; the answer's JSON, or an Error carrying its detail
  async post(url, body) {
    const headers = { "X-CSRF-Token": this.csrf(), "Accept": "application/json" };
    let payload = body;
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body || {});
    }
    const answer = await fetch(url, { method: "POST", headers, body: payload, credentials: "same-origin" });
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      throw new Error(data.detail || `The server answered ${answer.status}.`);
    }
    return data;
  },
  async getJSON(url) {
    const answer = await fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      throw new Error(data.detail || `The server answered ${answer.status}.`);
    }
    return data;
  },
};

document.addEventListener("submit", (event) => {
  // <form data-confirm="Really?">: ask before posting
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

document.addEventListener("click", (event) => {
  // a click outside an open drop-down menu closes it; Escape does too (below)
  document.querySelectorAll("details.menu[open]").forEach((menu) => {
    if (!menu.contains(event.target)) {
      menu.removeAttribute("open");
    }
  });
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    document.querySelectorAll("details.menu[open]").forEach((menu) => {
      menu.removeAttribute("open");
      const summary = menu.querySelector("summary");
      if (summary) {
        summary.focus();
      }
    });
  }
});
