// File Submissions: move the progress bars and counts of the submissions still queued or running, about once
// a second, from GET /settings/file-submissions/live?ids=...; a submission's own page reloads when it ends
// (to show its results, errors and the Apply or Undo button), the list updates its row in place.
"use strict";

(() => {
  const FIELDS = ["processed_records", "applied", "unchanged", "errors"];
  const announce = (text) => {
    const region = document.getElementById("live-status");
    if (region) {
      region.textContent = text;
    }
  };

  const update = (element, sub) => {
    const set = (name, value) => {
      element.querySelectorAll(`[data-field="${name}"]`).forEach((node) => {
        node.textContent = value;
      });
    };
    FIELDS.forEach((name) => set(name, String(sub[name])));
    set("total_records", sub.total_records === null ? "…" : String(sub.total_records));
    set("payout_delta", `${sub.payout_delta} ${sub.currency}`);
    const bar = element.querySelector('[data-field="progress"]');
    if (bar && sub.total_records) {
      bar.max = sub.total_records;
      bar.value = sub.processed_records;
    }
    const badge = element.querySelector('[data-field="status"]');
    if (badge && badge.textContent !== sub.status_text) {
      badge.textContent = sub.status_text;
      badge.className = `badge ${sub.status_class}`;
    }
    if (!sub.active) {
      if (bar) {
        bar.remove();
      }
      set("finished_at", sub.finished_at ? `finished ${sub.finished_at.slice(0, 10)} ${sub.finished_at.slice(11, 16)} UTC` : "");
      element.removeAttribute("data-live");
    }
  };

  const poll = async () => {
    const watched = Array.from(document.querySelectorAll("[data-live]"));
    if (!watched.length) {
      return;
    }
    const ids = watched.map((node) => node.dataset.live);
    let answer;
    try {
      answer = await window.payoutdesk.getJSON(`/settings/file-submissions/live?ids=${encodeURIComponent(ids.join(","))}`);
    } catch (error) {
      window.setTimeout(poll, 3000);
      return;
    }
    const byId = new Map(answer.items.map((sub) => [sub.id, sub]));
    let reload = false;
    watched.forEach((node) => {
      const sub = byId.get(node.dataset.live);
      if (!sub) {
        return;
      }
      const wasActive = node.hasAttribute("data-live");
      update(node, sub);
      if (wasActive && !sub.active) {
        announce(`${sub.id} is ${sub.status_text.toLowerCase()}: ${sub.applied} applied, ${sub.unchanged} unchanged, ` +
          `${sub.errors} errors.`);
        if (node.dataset.reload) {
          reload = true;
        }
      }
    });
    if (reload) {
      window.location.reload();
      return;
    }
    window.setTimeout(poll, 1000);
  };

  document.addEventListener("DOMContentLoaded", () => {
    if (document.querySelector("[data-live]")) {
      window.setTimeout(poll, 500);
    }
  });
})();
