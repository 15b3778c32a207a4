// Door codes on the resident page: set my PIN (or duress PIN), make a code for someone (a courier) with its
// QR code to show or share, list my codes and cards, revoke them. Secrets are shown only when made.
"use strict";

(() => {
  const { $, h, show, say, api } = Panel;
  const access = window.access = { shown: false, last: null };

  function token() { return window.app && window.app.token; }

  function usable() {
    const me = window.app && window.app.me;
    return !!(me && me.role === "resident" && !me.call_guid);
  }

  async function refresh() {
    const on = usable();
    show("access-card", on);
    if (!on) return;
    try {
      const list = (await api("/api/v1/access/credentials", { token: token() })).credentials;
      $("credentials").replaceChildren(...list.map(row));
    } catch (err) {
      say("access-status", `${err.message} (${err.code || "error"})`, "bad");
    }
  }

  function row(c) {
    const until = c.valid_until ? new Date(c.valid_until * 1000).toLocaleString([], { dateStyle: "short",
                                                                                     timeStyle: "short" }) : "";
    const kind = c.kind === "duress" ? "duress PIN" : c.kind;
    return h("tr", { "data-id": c.id },
      h("td", {}, c.label), h("td", {}, kind), h("td", {}, until),
      h("td", { class: "uses-left" }, c.uses_left === null ? "" : String(c.uses_left)),
      h("td", {}, h("button", { class: "stop", onclick: () => revoke(c) }, "Revoke")));
  }

  async function revoke(c) {
    try {
      await api(`/api/v1/access/credentials/${encodeURIComponent(c.id)}`, { method: "DELETE", token: token() });
      say("access-status", `${c.label} revoked`, "ok");
    } catch (err) {
      say("access-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh();
  }

  $("pin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const duress = $("pin-duress").checked;
    try {
      await api("/api/v1/access/pin", { method: "POST", token: token(), body: { pin: $("pin").value, duress } });
      $("pin").value = "";
      say("access-status", duress ? "Duress PIN set" : "PIN set", "ok");
    } catch (err) {
      say("access-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh();
  });

  $("code-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { label: $("code-label").value.trim() };
    if ($("code-until").value) body.valid_until = new Date($("code-until").value).toISOString();
    if ($("code-uses").value) body.max_uses = Number($("code-uses").value);
    try {
      const made = await api("/api/v1/access/codes", { method: "POST", token: token(), body });
      access.last = made;
      $("code-value").textContent = made.access_code;
      if (made.qr) $("code-qr").src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(made.qr.svg);
      show("code-qr", !!made.qr);
      show("code-made", true);
      say("access-status", `Code "${made.credential.label}" made`, "ok");
    } catch (err) {
      say("access-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh();
  });

  $("code-share").addEventListener("click", async () => {
    const made = access.last;
    if (!made) return;
    const text = `Door code: ${made.access_code} then # on the keypad`;
    try {
      if (navigator.share) await navigator.share({ title: made.credential.label, text });
      else await navigator.clipboard.writeText(text);
      say("access-status", "Code shared", "ok");
    } catch (err) { /* the user closed the share sheet */ }
  });

  // Follow the resident page's sign-in: the card shows for residents (not one-call credentials).
  let seen = null;
  setInterval(() => {
    const now = token() || null;
    if (now !== seen) {
      seen = now;
      show("code-made", false);
      refresh();
    }
  }, 250);
  access.refresh = refresh;
})();
