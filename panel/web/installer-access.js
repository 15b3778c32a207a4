// Door codes and cards on the installer page: every resident's PINs, codes and cards; learn a card by
// holding it to the reader; set a resident's PIN; revoke. Secrets are never shown.
"use strict";

(() => {
  const { $, h, say, api } = Panel;
  const creds = window.creds = { learning: false };

  function token() { return window.app && window.app.token; }

  async function refresh() {
    if (!token()) return;
    try {
      const list = (await api("/api/v1/access/credentials", { token: token() })).credentials;
      $("creds").replaceChildren(...list.map((c) => h("tr", { "data-id": c.id },
        h("td", {}, c.owner), h("td", {}, c.label), h("td", {}, c.kind),
        h("td", {}, c.uses_left === null ? "" : String(c.uses_left)),
        h("td", {}, h("button", { class: "stop", onclick: () => revoke(c) }, "Revoke")))));
    } catch (err) {
      say("creds-status", `${err.message} (${err.code || "error"})`, err.code === "not_ready" ? "warn" : "bad");
    }
  }

  async function revoke(c) {
    try {
      await api(`/api/v1/access/credentials/${encodeURIComponent(c.id)}`, { method: "DELETE", token: token() });
      say("creds-status", `${c.kind} ${c.label} of ${c.owner} revoked`, "ok");
    } catch (err) {
      say("creds-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh();
  }

  $("learn-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (creds.learning) return;
    creds.learning = true;
    $("learn-go").disabled = true;
    say("creds-status", "Hold the card to the reader now…", "warn");
    try {
      const body = { owner: $("learn-owner").value.trim(), label: $("learn-label").value.trim() || "card",
                     timeout_s: 30 };
      const r = await api("/api/v1/access/cards/learn", { method: "POST", token: token(), body });
      say("creds-status", r.message, "ok");
    } catch (err) {
      say("creds-status", `${err.message} (${err.code || "error"})`, "bad");
    } finally {
      creds.learning = false;
      $("learn-go").disabled = false;
    }
    refresh();
  });

  $("ipin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("/api/v1/access/pin", { method: "POST", token: token(),
                                                  body: { owner: $("ipin-owner").value.trim(), pin: $("ipin").value } });
      $("ipin").value = "";
      say("creds-status", r.message, "ok");
    } catch (err) {
      say("creds-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh();
  });

  // In simulation, an on-screen keypad drives the simulated matrix (POST /api/v1/sim/keypad).
  async function simpad() {
    let on = false;
    try {
      const health = await api("/api/v1/health/details", { token: token() });
      const state = await api("/api/v1/state", { token: token() });
      on = !!(health.simulated && state.access && state.access.keypad);
    } catch (err) { /* not simulated, or not running yet */ }
    Panel.show("simpad", on);
    if (!on || $("simpad-keys").children.length) return;
    // One key at a time, in order, as a finger presses them: a quick second click waits for the first.
    let queue = Promise.resolve();
    const press = (k) => {
      queue = queue.then(() => api("/api/v1/sim/keypad", { method: "POST", body: { keys: k } }))
        .catch((err) => say("creds-status", `${err.message} (${err.code || "error"})`, "bad"));
    };
    const keys = "123456789*0#".split("").map((k) => h("button", { "data-key": k, onclick: () => press(k) }, k));
    $("simpad-keys").replaceChildren(...keys);
  }

  let seen = null;
  setInterval(() => {
    const now = token() || null;
    if (now !== seen) {
      seen = now;
      refresh();
      if (now) simpad();
    }
  }, 250);
  creds.refresh = refresh;
})();
