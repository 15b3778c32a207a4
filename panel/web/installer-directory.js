// The directory card: units (from the call buttons) and their residents; add a resident and show their
// single-use sign-in link as a QR code; new link, rename, remove; each resident's signed-in devices.
// The panel's directory service decides everything; this only shows it and sends what was asked.
"use strict";

(() => {
  const { $, h, say, api, when } = Panel;
  const dir = window.directory = { view: null, link: null, timer: null };

  function token() { return window.app && window.app.token; }

  async function call(path, options, done) {
    try {
      const r = await api(path, { token: token(), ...options });
      if (done) done(r);
      say("directory-status", r.message, "ok");
    } catch (err) {
      say("directory-status", `${err.message} (${err.code || "error"})`, "bad");
    }
    refresh(true);
  }

  function showLink(r) {
    dir.link = r.link;
    $("directory-link-h").textContent = `Sign-in link for ${r.resident.name}, unit ${r.resident.unit_id}`;
    $("directory-qr").src = r.link.qr_svg;
    $("directory-url").textContent = r.link.url;
    Panel.show("directory-link", true);
  }

  function resident(r) {
    const name = h("input", { type: "text", value: r.name, maxlength: 64, "aria-label": `Name of ${r.name}`,
                              "data-rename-input": r.id });
    const sessions = r.sessions.length ? r.sessions.map((s) => h("li", { "data-session": s.token_id },
      h("span", {}, `${s.device}, since ${when(s.created_at)}`),
      h("button", { class: "stop", onclick: () => call(
        `/api/v1/directory/residents/${r.id}/sessions/${s.token_id}`, { method: "DELETE" }) }, "Sign out")))
      : [h("li", { class: "small" }, "not signed in anywhere")];
    return h("div", { class: "resident", "data-resident": r.id, "data-name": r.name },
      h("div", { class: "row" }, name,
        h("button", { "data-rename": r.id, onclick: () => call(`/api/v1/directory/residents/${r.id}`,
          { method: "PATCH", body: { name: name.value.trim() } }) }, "Rename"),
        h("button", { class: "primary", "data-newlink": r.id, onclick: () => call(
          `/api/v1/directory/residents/${r.id}/link`, { method: "POST" }, showLink) }, "New sign-in link"),
        h("button", { class: "stop", "data-remove": r.id, onclick: () => call(`/api/v1/directory/residents/${r.id}`,
          { method: "DELETE" }) }, "Remove")),
      h("ul", { class: "people" }, sessions));
  }

  function unit(u) {
    const name = h("input", { type: "text", maxlength: 64, placeholder: "name, e.g. Ana Silva",
                              "aria-label": `New resident of unit ${u.label}`, "data-add-input": u.id });
    const add = (e) => {
      e.preventDefault();
      call("/api/v1/directory/residents", { method: "POST", body: { unit_id: u.id, name: name.value.trim() } },
           (r) => { name.value = ""; showLink(r); });
    };
    return h("div", { class: "unit", "data-unit": u.id },
      h("h3", {}, `Unit ${u.label}`, h("span", { class: "small" }, `  button ${u.buttons.join(", ")}`)),
      ...u.residents.map(resident),
      h("form", { class: "row", onsubmit: add }, name, h("button", { type: "submit", "data-add": u.id }, "Add resident")));
  }

  async function refresh(force) {
    if (!token()) return;
    try {
      const view = await api("/api/v1/directory", { token: token() });
      dir.view = view;
      const typing = document.activeElement && document.activeElement.tagName === "INPUT"
        && $("directory").contains(document.activeElement);
      if (typing && force !== true) return;  // never redraw under the installer's typing; the next one catches up
      const parts = view.units.map(unit);
      if (view.orphans.length) {
        parts.push(h("div", { class: "unit" }, h("h3", {}, "Residents of units no longer on the call buttons"),
                      ...view.orphans.map(resident)));
      }
      $("directory").replaceChildren(...parts);
    } catch (err) {
      say("directory-status", `${err.message} (${err.code || "error"})`, "bad");
    }
  }

  $("directory-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(dir.link.url);
      say("directory-status", "The link is on the clipboard", "ok");
    } catch (err) {
      say("directory-status", "Select the link and copy it", "warn");
    }
  });
  $("directory-link-close").addEventListener("click", () => { Panel.show("directory-link", false); dir.link = null; });

  document.addEventListener("panel:signedin", () => {
    refresh();
    clearInterval(dir.timer);
    dir.timer = setInterval(() => refresh(), 3000);  // who is signed in where changes without an event
  });
  document.addEventListener("panel:signedout", () => { clearInterval(dir.timer); $("directory").replaceChildren(); });
  document.addEventListener("panel:config", () => refresh());  // a unit renamed or added on the forms
  dir.refresh = refresh;
})();
