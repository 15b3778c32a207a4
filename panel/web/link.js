// The call-link page: preview a call with a display name, watch who is in it, join with WebRTC, leave.
// The link is the part of this page's address after "#": browsers never send it to a server.
"use strict";

(() => {
  const { $, h, show, say, api } = Panel;
  const link = decodeURIComponent(location.hash.replace(/^#/, ""));
  const app = window.app = { state: "new", link, sub: null, you: null, version: null, people: [], c: null,
                             ended: false, error: null };

  function fail(err) {
    app.error = err.code || "error";
    const text = {
      link_expired: "This link has expired. Ask the resident for a new one.",
      link_revoked: "This link was revoked. Ask the resident for a new one.",
      invalid_link: "This is not a valid call link.",
      call_over: "Call ended",
      too_many_participants: "The call is full. Try again when someone leaves.",
      too_many_previews: "Too many people have this call open. Try again shortly.",
    }[err.code];
    return text ? `${text} (${err.code})` : `${err.message} (${err.code || "error"})`;
  }

  if (!link) {
    say("enter-status", "This page needs a call link: open the whole link you were sent.", "bad");
    $("preview").disabled = true;
  }

  $("enter-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    say("enter-status", "opening…");
    try {
      const r = await api("/api/v1/link/subscribe", { method: "POST", token: link, body: { name: $("name").value } });
      app.sub = r.subscription;
      app.you = r.you;
      app.state = "preview";
      show("enter", false);
      show("preview-card", true);
      $("call-info").textContent = `Unit ${r.call.unit_label} · ${r.call.call_type} call · you appear as “${r.you.name}”`;
      render(r.participants, false);
      app.version = r.version;
      poll();
    } catch (err) {
      say("enter-status", fail(err), "bad");
    }
  });

  function render(people, ended) {
    app.people = people.map((p) => p.name);
    $("people").replaceChildren(...people.map((p) => h("li", { "data-id": p.id },
      h("span", { class: "name" }, p.name),
      h("span", { class: "kind" }, p.kind === "resident" ? "resident" : "guest"),
      app.you && p.id === app.you.id ? h("span", { class: "kind" }, "(you)") : null)));
    if (ended || (people.length === 0 && app.state !== "new")) callEnded();
  }

  function callEnded() {
    if (app.ended) return;
    app.ended = true;
    app.state = "ended";
    show("ended", true);
    $("join").disabled = true;
    $("leave").disabled = true;
    show("mute", false);
    if (app.c) { app.c.close(); app.c = null; }
    show("video", false);
    say("status", "");
  }

  // The participant list, long-polled: the panel answers at once when it changes.
  async function poll() {
    while (app.sub && !app.ended) {
      try {
        const r = await api(`/api/v1/link/participants?version=${app.version}&wait_s=20`, { token: app.sub });
        app.version = r.version;
        render(r.participants, r.ended);
        if (app.c && !r.joined && app.state === "joined") {
          say("status", "You are no longer in the call.", "warn");
          app.c.close(); app.c = null; app.state = "preview";
          $("join").disabled = false;
        }
      } catch (err) {
        if (err.code === "network") { await new Promise((r) => setTimeout(r, 2000)); continue; }
        if (err.code === "call_over") { callEnded(); return; }
        stopWith(fail(err));
        return;
      }
    }
  }

  function stopWith(text) {
    app.sub = null;
    app.state = "closed";
    if (app.c) { app.c.close(); app.c = null; }
    show("video", false);
    $("join").disabled = true;
    $("leave").disabled = true;
    say("status", text, "bad");
  }

  $("join").addEventListener("click", async () => {
    $("join").disabled = true;
    say("status", "joining…");
    try {
      app.c = await Panel.call({
        video: true, videoEl: $("video"),
        signal: async (sdp) => api("/api/v1/link/join", { method: "POST", token: app.sub, body: { sdp } }),
        onState: (s) => say("status", "connection " + s, s === "connected" ? "ok" : ""),
      });
      app.state = "joined";
      show("video", true);
      show("mute", true);
    } catch (err) {
      app.c = null;
      say("status", "Could not join: " + fail(err), "bad");
      $("join").disabled = false;
    }
  });

  $("mute").addEventListener("click", () => {
    if (!app.c) return;
    app.c.mute(!app.c.muted);
    $("mute").textContent = app.c.muted ? "Unmute" : "Mute";
    $("mute").setAttribute("aria-pressed", app.c.muted ? "true" : "false");
  });

  $("leave").addEventListener("click", async () => {
    const sub = app.sub;
    app.sub = null;
    if (app.c) { app.c.close(); app.c = null; }
    try { if (sub) await api("/api/v1/link/leave", { method: "POST", token: sub }); } catch (err) { /* gone already */ }
    app.state = "left";
    show("video", false);
    show("mute", false);
    $("join").disabled = true;
    $("leave").disabled = true;
    $("people").replaceChildren();
    say("status", "You left the call. Close this page, or open the link again to come back.");
  });

  // Closing the page unsubscribes (keepalive lets the request outlive the page).
  window.addEventListener("pagehide", () => {
    if (app.sub) {
      fetch("/api/v1/link/leave?reason=page_closed", { method: "POST", keepalive: true,
                                                      headers: { Authorization: "Bearer " + app.sub } });
    }
  });
})();
