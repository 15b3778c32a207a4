// The resident page: rings when a visitor presses the button, answers with two-way audio and live video,
// opens the door during the call, shares a call link, and shows the call history with the visitor's picture.
"use strict";

(() => {
  const { $, h, show, say, when, api, picture, events, ringer, notify } = Panel;
  const END = new Set(["ended", "declined", "canceled", "missed", "failed"]);
  const DEVICE_KEY = "panel.resident.device";  // this device's credential from a sign-in link
  const RINGING = new Set(["calling", "ringing"]);
  const app = window.app = {
    state: "signedout", token: null, me: null, call: null, c: null, link: null, stream: null, notified: 0,
    page: 1, snapshots: {},
    get ringing() { return ringer.ringing; },
  };

  function setState(state) {
    app.state = state;
    show("signin", state === "signedout");
    show("idle", state === "idle" || state === "ended");
    show("incoming", state === "ringing");
    show("incall", state === "incall");
    show("history-card", state !== "signedout");
    show("signout", state !== "signedout");
  }

  // -- signing in --------------------------------------------------------------------------------------
  $("kind").addEventListener("change", () => {
    $("secret-label").textContent = $("kind").value === "installer" ? "Installer password" : "Access token";
  });

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    Panel.askNotifications();  // a user gesture: the browser may ask now
    say("signin-status", "signing in…");
    try {
      let token = $("secret").value.trim();
      if ($("kind").value === "installer") {
        token = (await api("/api/v1/auth/login", { method: "POST", body: { password: token } })).token;
      }
      await start(token);
      $("secret").value = "";
    } catch (err) {
      say("signin-status", `${err.message} (${err.code || "error"})`, "bad");
    }
  });

  $("signout").addEventListener("click", async () => {
    const token = app.token;
    await hangupLocal();
    stop();
    sessionStorage.removeItem("panel.resident.token");
    localStorage.removeItem(DEVICE_KEY);
    if (token && app.me && (app.me.kind === "session" || app.me.issued_by === "signin-link")) {
      try { await api("/api/v1/auth/logout", { method: "POST", token }); } catch (e) { /* gone already */ }
    }
    setState("signedout");
  });

  async function start(token) {
    const me = (await api("/api/v1/auth/me", { token })).credential;
    app.token = token;
    app.me = me;
    sessionStorage.setItem("panel.resident.token", token);
    const unit = me.unit_id ? `, unit ${me.unit_id}` : me.call_guid ? ", one call" : "";
    $("who").textContent = `${me.name || me.subject} (${me.role}${unit})`;
    setState("idle");
    app.stream = events("/api/v1/events/stream?type=call.*", token, onEvent, onStream);
    const state = await api("/api/v1/state", { token });
    const call = state.call && state.call.call;
    if (call && !END.has(call.status)) onCall(call);
    loadHistory(true);
  }

  function stop() {
    if (app.stream) app.stream.stop();
    app.stream = null;
    ringer.stop();
    app.token = null;
    app.me = null;
    app.call = null;
    $("who").textContent = "";
  }

  function onStream(state, err) {
    if (state === "open") say("stream-status", "Connected: the page rings when someone is at the door.", "ok");
    else if (state === "retrying") say("stream-status", "Connection lost; reconnecting…", "warn");
    else if (state === "refused") {
      stop();
      setState("signedout");
      say("signin-status", `Signed out: ${err.message}`, "bad");
    }
  }

  // -- calls -------------------------------------------------------------------------------------------
  function onEvent(ev) {
    const d = ev.data || {};
    if (ev.type === "call.created") onCall({ ...d, status: d.status || "calling" });
    else if (ev.type === "call.status_updated") onCall(d);
    else if (ev.type === "call.snapshot" && app.call && d.guid === app.call.guid) loadSnapshot(d.guid);
    else if ((ev.type === "call.participant_joined" || ev.type === "call.participant_left") && app.call
             && d.guid === app.call.guid) showPeople(d.participants);
  }

  function onCall(d) {
    const mine = app.call && app.call.guid === d.guid;
    if (!mine && END.has(d.status)) { loadHistory(true); return; }
    if (!mine) {
      app.call = { guid: d.guid, unit: d.unit, call_type: d.call_type, status: d.status, answered_by: null };
      $("incoming-snapshot").hidden = true;
      loadSnapshot(d.guid);
      loadHistory(true);
    }
    const call = app.call;
    if (mine && call.status !== d.status && !END.has(d.status)) loadHistory(true);
    call.status = d.status;
    if (d.answered_by) call.answered_by = d.answered_by;
    if (RINGING.has(d.status)) {
      if (app.state !== "ringing") ring(call);
    } else if (END.has(d.status)) {
      ended(call, d);
    } else if (call.answered_by && call.answered_by !== app.me.subject && !app.c) {
      ringer.stop();
      setState("idle");
      say("stream-status", `Answered by ${call.answered_by}.`);
    }
  }

  function ring(call) {
    setState("ringing");
    const label = call.unit && call.unit.label ? `Unit ${call.unit.label}` : "";
    $("incoming-unit").textContent = `${label} · ${call.call_type === "audio" ? "audio call" : "video call"}`;
    say("incoming-status", "");
    ringer.start();
    if (notify("Someone is at the door", label || "Door panel")) app.notified += 1;
    const canAnswer = app.me.role === "resident";
    $("answer").disabled = !canAnswer;
    $("decline").disabled = !canAnswer;
    if (!canAnswer) say("incoming-status", "Only residents answer calls; you are signed in as " + app.me.role + ".");
  }

  async function loadSnapshot(guid) {
    if (app.snapshots[guid]) { setSnapshot(guid, app.snapshots[guid]); return; }
    const url = await picture(`/api/v1/calls/${encodeURIComponent(guid)}/snapshot.jpg`, app.token);
    if (url) { app.snapshots[guid] = url; setSnapshot(guid, url); }
  }

  function setSnapshot(guid, url) {
    if (app.call && app.call.guid === guid) {
      $("incoming-snapshot").src = url;
      $("incoming-snapshot").hidden = false;
    }
  }

  $("answer").addEventListener("click", async () => {
    const call = app.call;
    if (!call) return;
    ringer.stop();
    $("answer").disabled = true;
    say("incoming-status", "connecting…");
    try {
      app.c = await Panel.call({
        signal: Panel.whep(app.token), video: call.call_type !== "audio", videoEl: $("video"),
        onMessage: onPanelMessage, onState: (s) => say("call-status", "connection " + s, s === "connected" ? "ok" : ""),
      });
      call.answered_by = app.me.subject;
      setState("incall");
      $("link").textContent = "";
      show("revoke", false);
      updateVideoButton(app.c.videoOn);
      refreshPeople();
    } catch (err) {
      app.c = null;
      say("incoming-status", `Could not answer: ${err.message} (${err.code || "error"})`, "bad");
      $("answer").disabled = false;
    }
  });

  $("decline").addEventListener("click", async () => {
    if (!app.call) return;
    ringer.stop();
    try {
      await api("/api/v1/calls/decline", { method: "POST", token: app.token, body: { call_guid: app.call.guid } });
    } catch (err) {
      say("incoming-status", `${err.message} (${err.code})`, "bad");
    }
  });

  function onPanelMessage(msg) {
    if (msg.type === "state") updateVideoButton(msg.video === "on");
    else if (msg.type === "data") say("call-status", "From the panel: " + JSON.stringify(msg.data));
    else if (msg.type === "end") say("call-status", "The panel ended the session: " + msg.reason);
    else if (msg.type === "error") say("call-status", `${msg.message} (${msg.code})`, "bad");
  }

  function updateVideoButton(on) {
    $("video-toggle").textContent = on ? "Switch to audio only" : "Switch to video";
    $("video-toggle").setAttribute("aria-pressed", on ? "true" : "false");
  }

  $("mute").addEventListener("click", () => {
    if (!app.c) return;
    app.c.mute(!app.c.muted);
    $("mute").textContent = app.c.muted ? "Unmute" : "Mute";
    $("mute").setAttribute("aria-pressed", app.c.muted ? "true" : "false");
  });

  $("video-toggle").addEventListener("click", async () => {
    if (!app.c) return;
    $("video-toggle").disabled = true;
    try {
      await app.c.setVideo(!app.c.videoOn);
      updateVideoButton(app.c.videoOn);
    } catch (err) {
      say("call-status", "Video switch failed: " + err.message, "bad");
    } finally {
      $("video-toggle").disabled = false;
    }
  });

  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !app.c) return;
    if (app.c.send({ type: "data", data: { text, from: app.me.subject } })) {
      say("call-status", "Sent to the panel: " + text, "ok");
      $("text").value = "";
    } else {
      say("call-status", "Not sent: the connection is not open yet", "warn");
    }
  });

  $("open").addEventListener("click", async () => {
    if (!app.call) return;
    $("open").disabled = true;
    try {
      const body = app.me.role === "resident" ? {} : { call_guid: app.call.guid };
      const r = await api("/api/v1/door/open", { method: "POST", token: app.token, body });
      say("call-status", `Door open for ${r.duration_s} s`, "ok");
    } catch (err) {
      say("call-status", `Not opened: ${err.message} (${err.code})`, "bad");
    } finally {
      setTimeout(() => { $("open").disabled = false; }, 1000);
    }
  });

  $("hangup").addEventListener("click", async () => {
    await hangupLocal();
    setState("idle");
    say("stream-status", "You hung up.");
  });

  async function hangupLocal() {
    const c = app.c;
    app.c = null;
    if (!c) return;
    await Panel.endWhep(c.resource, app.token);
    c.close();
  }

  function ended(call, d) {
    ringer.stop();
    const c = app.c;
    app.c = null;
    if (c) c.close();
    app.call = null;
    app.link = null;
    showPeople([]);
    setState("ended");
    const who = d.ended_by || d.who;
    say("stream-status", `Call ${d.status}${who ? " by " + who : ""}${d.reason ? " (" + d.reason + ")" : ""}. `
        + "Waiting for calls.");
    loadHistory(true);
  }

  // -- participants and call links ---------------------------------------------------------------------
  async function refreshPeople() {
    if (!app.call) return;
    try {
      const r = await api(`/api/v1/calls/${encodeURIComponent(app.call.guid)}/participants`, { token: app.token });
      showPeople(r.participants);
    } catch (err) { /* the next event refreshes it */ }
  }

  function showPeople(people) {
    const list = $("people");
    list.replaceChildren(...people.map((p) => h("li", { "data-id": p.id },
      h("span", { class: "name" }, p.name),
      h("span", { class: "kind" }, p.kind === "resident" ? "resident" : "guest (link)"),
      app.me && p.id === "res:" + app.me.subject ? h("span", { class: "kind" }, "(you)") : null)));
    app.people = people.map((p) => p.name);
  }

  $("share").addEventListener("click", async () => {
    if (!app.call) return;
    try {
      const r = await api(`/api/v1/calls/${encodeURIComponent(app.call.guid)}/links`, { method: "POST", token: app.token });
      const url = new URL(r.url, location.origin).href;
      app.link = { id: r.info.id, url };
      $("link").textContent = url;
      show("revoke", true);
      if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
      say("call-status", `Link valid until ${when(r.info.expires_at)}; anyone with it can join this call.`, "ok");
    } catch (err) {
      say("call-status", `No link: ${err.message} (${err.code})`, "bad");
    }
  });

  $("revoke").addEventListener("click", async () => {
    if (!app.call || !app.link) return;
    try {
      await api(`/api/v1/calls/${encodeURIComponent(app.call.guid)}/links/${app.link.id}`,
                { method: "DELETE", token: app.token });
      $("link").textContent = "";
      show("revoke", false);
      app.link = null;
      say("call-status", "Link revoked: it no longer opens, and its guests are out.", "ok");
    } catch (err) {
      say("call-status", `${err.message} (${err.code})`, "bad");
    }
  });

  // -- history ---------------------------------------------------------------------------------------
  async function loadHistory(reset) {
    if (!app.token) return;
    if (reset) app.page = 1;
    const gen = app.historyGen = (app.historyGen || 0) + 1;  // a newer load wins over a slower older one
    try {
      const r = await api(`/api/v1/calls?page=${app.page}&per_page=10`, { token: app.token });
      if (gen !== app.historyGen) return;
      if (reset) $("history").replaceChildren();
      for (const c of r.calls) {
        const img = h("img", { class: "thumb", alt: "visitor at " + when(c.created_at) });
        const by = c.answered_by || c.declined_by || (c.ended_by !== "panel" ? c.ended_by : null);
        const result = c.status + (by ? " · " + by : "");
        $("history").append(h("tr", { "data-guid": c.guid },
          h("td", {}, img), h("td", {}, when(c.created_at)), h("td", {}, c.unit.label), h("td", {}, result)));
        picture(`/api/v1/calls/${encodeURIComponent(c.guid)}/snapshot.jpg`, app.token).then((url) => {
          if (url) img.src = url; else img.alt = "no picture";
        });
      }
      $("more").disabled = app.page * 10 >= r.total;
    } catch (err) {
      $("history").append(h("tr", {}, h("td", { colspan: 4 }, `History unavailable: ${err.message}`)));
    }
  }

  $("more").addEventListener("click", () => { app.page += 1; loadHistory(false); });

  window.addEventListener("pagehide", () => {
    if (app.c && app.c.resource && app.token) {
      fetch(app.c.resource, { method: "DELETE", headers: { Authorization: "Bearer " + app.token }, keepalive: true });
    }
  });

  // -- a sign-in link: /resident#signin=<code> ----------------------------------------------------------
  // The code rides in the fragment, which the browser never sends, and leaves the address bar at once.
  // It works once: traded for this device's own credential, kept on the device (localStorage) until
  // the resident signs out or the installer signs the device out.
  async function signInByLink(code) {
    history.replaceState(null, "", location.pathname);
    say("signin-status", "signing in with your link…");
    try {
      const r = await api("/api/v1/auth/signin", { method: "POST", body: { code } });
      localStorage.setItem(DEVICE_KEY, r.token);
      await start(r.token);
      say("signin-status", "");
    } catch (err) {
      setState("signedout");
      say("signin-status", `${err.message} (${err.code || "error"})`, "bad");
    }
  }

  // -- start -----------------------------------------------------------------------------------------
  setState("signedout");
  const link = /^#signin=([A-Za-z0-9_-]+)$/.exec(location.hash);
  const saved = sessionStorage.getItem("panel.resident.token") || localStorage.getItem(DEVICE_KEY);
  if (link) signInByLink(link[1]);
  else if (saved) {
    start(saved).catch(() => {
      sessionStorage.removeItem("panel.resident.token");
      localStorage.removeItem(DEVICE_KEY);
      setState("signedout");
    });
  }
})();
