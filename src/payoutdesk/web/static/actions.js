// Pending Payouts: expanding a row, selecting rows, the Reverse dialog, and Modify Item Details' live
// preview of the payout. Every page still works without this script (links and plain forms).
"use strict";

(() => {
  const pd = window.payoutdesk;

  // --- the filters: a shorter address, without the empty fields ------------------------------------
  document.querySelectorAll("form.filters").forEach((form) => {
    form.addEventListener("submit", () => {
      form.querySelectorAll("input, select").forEach((field) => {
        if (!field.value) {
          field.disabled = true;
        }
      });
      window.setTimeout(() => form.querySelectorAll(":disabled").forEach((f) => { f.disabled = false; }), 0);
    });
  });

  // --- expanding a row: its items and its history, fetched once ---------------------------------
  document.querySelectorAll("button.expand").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const row = document.getElementById(button.getAttribute("aria-controls"));
      if (!row) {
        return;
      }
      const open = button.getAttribute("aria-expanded") === "true";
      if (open) {
        row.hidden = true;
        button.setAttribute("aria-expanded", "false");
        return;
      }
      const cell = row.querySelector("td");
      if (!row.dataset.loaded) {
        cell.textContent = "Loading…";
        row.hidden = false;
        try {
          const answer = await fetch(button.dataset.url, { credentials: "same-origin" });
          if (!answer.ok) {
            throw new Error(`The server answered ${answer.status}.`);
          }
          const html = await answer.text();
          // the fragment is our own server's template (autoescaped); parse it, then move its nodes in
          const doc = new DOMParser().parseFromString(html, "text/html");
          cell.replaceChildren(...doc.body.childNodes);
          row.dataset.loaded = "1";
        } catch (error) {
          cell.textContent = error.message;
        }
      }
      row.hidden = false;
      button.setAttribute("aria-expanded", "true");
    });
  });

  // --- selecting rows ------------------------------------------------------------------------------
  const all = document.getElementById("select-all");
  const picks = () => Array.from(document.querySelectorAll("input.pick"));
  const count = document.getElementById("selected-count");
  const showCount = () => {
    if (!count) {
      return;
    }
    const n = picks().filter((p) => p.checked).length;
    count.textContent = n ? `${n} selected` : "Select rows to change several at once.";
  };
  if (all) {
    all.hidden = false;
    all.addEventListener("change", () => {
      picks().forEach((p) => { p.checked = all.checked; });
      showCount();
    });
  }
  document.addEventListener("change", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.classList.contains("pick")) {
      if (all) {
        all.checked = picks().every((p) => p.checked);
      }
      showCount();
    }
  });

  // --- Reverse: the form in a dialog ----------------------------------------------------------------
  const dialog = document.getElementById("reverse-dialog");
  if (dialog) {
    document.addEventListener("click", async (event) => {
      const link = event.target instanceof Element ? event.target.closest("a.reverse-link") : null;
      if (!link) {
        const cancel = event.target instanceof Element ? event.target.closest("#reverse-dialog a.cancel") : null;
        if (cancel) {
          event.preventDefault();
          dialog.close();
        }
        return;
      }
      event.preventDefault();
      const menu = link.closest("details.menu");
      if (menu) {
        menu.removeAttribute("open");
      }
      try {
        const answer = await fetch(link.dataset.form, { credentials: "same-origin" });
        if (!answer.ok) {
          throw new Error(`The server answered ${answer.status}.`);
        }
        const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
        dialog.querySelector(".dialog-body").replaceChildren(...doc.body.childNodes);
        dialog.showModal();
        const select = dialog.querySelector("select");
        if (select) {
          select.focus();
        }
      } catch (error) {
        window.location.href = link.href; // the page of the same form
      }
    });
  }

  // --- Modify Item Details: the payout before and after, as the server computes it --------------------
  const form = document.getElementById("modify-form");
  if (form) {
    const amount = form.querySelector("#amount");
    const reason = form.querySelector("#reason");
    const status = document.getElementById("preview-status");
    const error = document.getElementById("preview-error");
    const payoutAfter = document.getElementById("payout-after");
    const amountAfter = document.getElementById("amount-after");
    const original = { payout: payoutAfter.textContent, amount: amountAfter.textContent };
    const itemCells = Array.from(form.querySelectorAll("td.item-after"));
    const itemOriginal = itemCells.map((c) => c.textContent);
    let timer = null;
    let asked = 0;

    const reset = () => {
      payoutAfter.textContent = original.payout;
      amountAfter.textContent = original.amount;
      itemCells.forEach((c, n) => { c.textContent = itemOriginal[n]; });
    };
    const preview = async () => {
      const rejected = Array.from(form.querySelectorAll("input.reject:checked")).map((c) => c.value);
      const body = { amount: amount.value.trim() || null, reject: rejected, reason: reason.value || null };
      error.classList.add("hidden");
      error.textContent = "";
      if (!body.amount && !rejected.length) {
        reset();
        status.textContent = "";
        return;
      }
      const mine = ++asked;
      try {
        const answer = await pd.post(form.dataset.preview, body);
        if (mine !== asked) {
          return;
        }
        payoutAfter.textContent = answer.after.payout;
        amountAfter.textContent = answer.after.amount;
        answer.items.forEach((item, n) => {
          if (itemCells[n]) {
            itemCells[n].textContent = item.payout;
          }
        });
        status.textContent = answer.outcome === "unchanged"
          ? "This changes nothing."
          : `Payout after: ${answer.after.payout} ${answer.currency}${answer.state === "REVERSED" ? " (the action is reversed)" : ""}.`;
      } catch (problem) {
        if (mine !== asked) {
          return;
        }
        reset();
        status.textContent = "";
        error.textContent = problem.message;
        error.classList.remove("hidden");
      }
    };
    const soon = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(preview, 250);
    };
    amount.addEventListener("input", soon);
    reason.addEventListener("change", soon);
    form.querySelectorAll("input.reject").forEach((c) => c.addEventListener("change", soon));
  }
})();
