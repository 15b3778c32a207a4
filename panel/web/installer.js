// The installer page: health and backlog, live inputs and relays, relay test pulse, camera preview,
// microphone level, speaker test tone, event and access logs (paged, newest first), password change.
// The wiring, self-test, directory and configuration forms are modules of their own (installer-*.js);
// they hear from this one through DOM events: panel:signedin / panel:signedout (the token), panel:state
// (every state read) and panel:event (every live event).
"use strict";

(() => {
  const { $, h, show, say, when, api, events } = Panel;
  const app = window.app = { state: "signedout", token: null, stream: null, cam: null, meter: null, events: [],
                             pulses: 0, logPage: 1, accessPage: 1 };
  const tell = (name, detail) => document.dispatchEvent(new CustomEvent("panel:" + name, { detail }));

  function setState(state) {
    app.state = state;
    show("signin", state === "signedout");
    show("tools", state !== "signedout");
    show("signout", state !== "signedout");
  }

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    say("signin-status", "signing in…");
    try {
      const r = await api("/api/v1/auth/login", { method: "POST", body: { password: $("password").value } });
      $("password").value = "";
      await start(r.token);
      if (/generated password/.test(r.message)) say("pw-status", "Change the generated password now.", "warn");
    } catch (err) {
      say("signin-status", `${err.message} (${err.code})`, "bad");
    }
  });

  $("signout").addEventListener("click", async () => {
    const token = app.token;
    stop();
    sessionStorage.removeItem("panel.installer.token");
    try { await api("/api/v1/auth/logout", { method: "POST", token }); } catch (e) { /* gone already */ }
    setState("signedout");
  });

  async function start(token) {
    const me = (await api("/api/v1/auth/me", { token })).credential;
    if (me.role !== "installer") throw new Panel.ApiError(403, "forbidden", "this page is for the installer");
    app.token = token;
    sessionStorage.setItem("panel.installer.token", token);
    $("who").textContent = `installer (${me.kind})`;
    setState("tools");
    app.stream = events("/api/v1/events/stream?after=now", token, onEvent, onStream);
    await Promise.all([refreshState(), refreshHealth(), loadConfig(), loadLogs(), loadAccess()]);
    app.healthTimer = setInterval(refreshHealth, 5000);
    tell("signedin", { token });
  }

  function stop() {
    if (app.stream) app.stream.stop();
    app.stream = null;
    clearInterval(app.healthTimer);
    stopMeter();
    stopCamera();
    app.token = null;
    $("who").textContent = "";
    tell("signedout", {});
  }

  function onStream(state, err) {
    const live = $("live");
    live.textContent = state === "open" ? "live" : state === "retrying" ? "reconnecting" : "offline";
    live.className = "pill " + (state === "open" ? "on" : "off");
    if (state === "refused") {
      stop();
      setState("signedout");
      say("signin-status", `Signed out: ${err.message}`, "bad");
    }
  }

  // -- live state: every event may change an input or a relay, so re-read the state (coalesced) ----------
  let stateQueued = false;
  function onEvent(ev) {
    if (app.logPage === 1) addLog(ev, true);
    tell("event", ev);
    if (ev.type.startsWith("door.") && app.accessPage === 1) loadAccess();
    if (stateQueued) return;
    stateQueued = true;
    setTimeout(() => { stateQueued = false; refreshState(); }, 50);
  }

  async function refreshState() {
    if (!app.token) return;
    try {
      const s = await api("/api/v1/state", { token: app.token });
      app.lastState = s;
      tell("state", s);
      const inputs = Object.entries(s.inputs).map(([name, i]) => h("tr", { "data-input": name },
        h("td", {}, name),
        h("td", {}, h("span", { class: "pill " + (i.active ? "on" : "off") }, i.active ? "active" : "at rest")),
        h("td", {}, i.stuck ? h("span", { class: "pill alert" }, "stuck") : "")));
      inputs.push(h("tr", {}, h("td", {}, "door"),
        h("td", {}, h("span", { class: "pill " + (s.door.open ? "on" : "off") }, s.door.open ? "open" : "closed")),
        h("td", {}, s.door.tamper.active ? h("span", { class: "pill alert" }, "tamper") : "")));
      $("inputs").replaceChildren(...inputs);
      $("relays").replaceChildren(...Object.entries(s.door.relays).map(([rid, r]) => h("tr", { "data-relay": rid },
        h("td", {}, "relay " + rid + " (" + r.mode + ")"),
        h("td", {}, h("span", { class: "pill " + (r.energised ? "on" : "off"), "data-state": r.energised ? "on" : "off" },
                      r.energised ? "energised" : "off")),
        h("td", {}, h("button", { onclick: () => pulse(rid), "data-pulse": rid }, "Test pulse")))));
    } catch (err) {
      say("relay-status", `State unavailable: ${err.message}`, "bad");
    }
  }

  async function pulse(rid) {
    say("relay-status", `pulsing relay ${rid}…`);
    try {
      const r = await api("/api/v1/door/open", { method: "POST", token: app.token, body: { relay: rid, duration_s: 1 } });
      app.pulses += 1;
      say("relay-status", `Relay ${rid} energised for ${r.duration_s} s (access log ${r.access_id}); listen for the `
          + "click and the lock.", "ok");
    } catch (err) {
      say("relay-status", `Relay ${rid} not pulsed: ${err.message} (${err.code})`, "bad");
    }
  }

  async function refreshHealth() {
    if (!app.token) return;
    try {
      const [hl, sys] = await Promise.all([api("/api/v1/health/details", { token: app.token }),
                                          api("/api/v1/system", { token: app.token })]);
      const rows = [
        ["status", hl.status], ["firmware", hl.version], ["uptime", Math.round(hl.uptime_s) + " s"],
        ["backlog (events not yet delivered)", hl.checks.backlog], ["relays", hl.checks.relays ? "ok" : "FAULT"],
        ["event loop lag", hl.checks.loop_lag_ms + " ms"], ["simulated", hl.simulated ? "yes" : "no"],
      ];
      const shown = new Set(["code", "message", "simulated", "backlog", "uptime_s", "firmware_version", "version"]);
      for (const [k, v] of Object.entries(sys)) {
        if (shown.has(k) || typeof v === "object" || v === null) continue;
        rows.push([k.replace(/_/g, " "), v]);
      }
      $("health").replaceChildren(...rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, String(v)))));
      showUpdate(sys.update);
    } catch (err) {
      $("health").replaceChildren(h("tr", {}, h("td", {}, `Health unavailable: ${err.message}`)));
    }
  }

  // -- camera: live view over WHEP (the installer's session is a live-view credential) -------------------
  $("cam-start").addEventListener("click", async () => {
    $("cam-start").disabled = true;
    say("cam-status", "starting…");
    try {
      const pc = new RTCPeerConnection({ iceServers: [] });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
      const stream = new MediaStream();
      pc.ontrack = (e) => { stream.addTrack(e.track); $("camera").srcObject = stream; };
      pc.onconnectionstatechange = () => say("cam-status", "connection " + pc.connectionState,
                                             pc.connectionState === "connected" ? "ok" : "");
      await pc.setLocalDescription(await pc.createOffer());
      await Panel.gathered(pc, 2000);
      const answer = await Panel.whep(app.token)(pc.localDescription.sdp);
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      app.cam = { pc, resource: answer.resource };
      $("cam-stop").disabled = false;
    } catch (err) {
      say("cam-status", `No camera: ${err.message} (${err.code || "error"})`, "bad");
      $("cam-start").disabled = false;
    }
  });

  function stopCamera() {
    const cam = app.cam;
    app.cam = null;
    if (!cam) return;
    Panel.endWhep(cam.resource, app.token);
    cam.pc.close();
    $("camera").srcObject = null;
    $("cam-start").disabled = false;
    $("cam-stop").disabled = true;
  }
  $("cam-stop").addEventListener("click", () => { stopCamera(); say("cam-status", "stopped"); });

  // -- sound ---------------------------------------------------------------------------------------------
  $("mic-start").addEventListener("click", () => { if (app.meter) stopMeter(); else startMeter(); });

  function startMeter() {
    $("mic-start").textContent = "Stop measuring";
    $("mic-start").setAttribute("aria-pressed", "true");
    const tick = async () => {
      if (!app.meter) return;
      try {
        const r = await api("/api/v1/media/microphone/level?seconds=0.3", { token: app.token });
        app.level = r;
        $("mic-meter").value = r.rms_dbfs;
        $("mic-text").textContent = `${r.rms_dbfs} dBFS (peak ${r.peak_dbfs} dBFS)`
          + (r.dominant_hz ? `, strongest ${Math.round(r.dominant_hz)} Hz` : "");
      } catch (err) {
        $("mic-text").textContent = `${err.message} (${err.code})`;
      }
      if (app.meter) app.meter = setTimeout(tick, 200);
    };
    app.meter = setTimeout(tick, 0);
  }

  function stopMeter() {
    if (app.meter) clearTimeout(app.meter);
    app.meter = null;
    $("mic-start").textContent = "Measure the microphone";
    $("mic-start").setAttribute("aria-pressed", "false");
  }

  $("tone").addEventListener("click", async () => {
    try {
      const r = await api("/api/v1/media/speaker/test", { method: "POST", token: app.token,
                                                           body: { hz: Number($("tone-hz").value), seconds: 1.0 } });
      say("sound-status", r.message, "ok");
    } catch (err) {
      say("sound-status", `${err.message} (${err.code})`, "bad");
    }
  });

  // -- configuration ------------------------------------------------------------------------------------
  async function loadConfig() {
    try {
      const r = await api("/api/v1/config", { token: app.token });
      $("config").value = JSON.stringify(r.config, null, 2);
      tell("config", r);
      if (r.restart_required.length) say("config-status", "Waiting for a restart: " + r.restart_required.join(", "), "warn");
    } catch (err) {
      $("config").value = `Configuration unavailable: ${err.message}`;
    }
  }

  app.loadConfig = loadConfig;
  $("config-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const dryRun = (e.submitter && e.submitter.value) !== "save";
    const key = $("config-key").value.trim();
    let value;
    try { value = JSON.parse($("config-value").value); }
    catch (err) { say("config-status", "The value is not JSON: write 5, \"text\" or true", "bad"); return; }
    try {
      const r = await api("/api/v1/config", { method: "PATCH", token: app.token,
                                              body: { set: { [key]: value }, dry_run: dryRun } });
      say("config-status", r.message, "ok");
      if (!dryRun) loadConfig();
    } catch (err) {
      say("config-status", `${err.message} (${err.code})`, "bad");
    }
  });

  // -- logs -----------------------------------------------------------------------------------------------
  function summary(ev) {
    const d = ev.data || {};
    const parts = [];
    for (const k of ["status", "relay", "cause", "actor", "reason", "input", "active", "button", "guid", "call_guid"]) {
      if (d[k] !== undefined && d[k] !== null) parts.push(`${k}=${typeof d[k] === "object" ? JSON.stringify(d[k]) : d[k]}`);
    }
    return parts.join(" ");
  }

  function addLog(ev, live) {
    app.events.push(ev);
    const row = h("tr", { "data-type": ev.type }, h("td", {}, when(ev.time)), h("td", {}, ev.type),
                  h("td", { class: "mono" }, summary(ev)));
    if (live) $("logs").prepend(row); else $("logs").append(row);
    while ($("logs").children.length > PER_PAGE * 5) $("logs").lastChild.remove();
  }

  // Both logs page newest first; live events are added on top while the first page is shown.
  const PER_PAGE = 20;
  function pager(what, page, total) {
    const pages = Math.max(1, Math.ceil(total / PER_PAGE));
    $(what + "-page").textContent = `page ${page} of ${pages} (${total})`;
    $(what + "-newer").disabled = page <= 1;
    $(what + "-older").disabled = page >= pages;
  }

  async function loadLogs() {
    try {
      const r = await api(`/api/v1/logs/events?page=${app.logPage}&per_page=${PER_PAGE}`, { token: app.token });
      $("logs").replaceChildren();
      for (const ev of r.events) addLog(ev, false);
      pager("logs", r.page, r.total);
    } catch (err) {
      $("logs").replaceChildren(h("tr", {}, h("td", {}, `Events unavailable: ${err.message}`)));
    }
  }

  async function loadAccess() {
    try {
      const r = await api(`/api/v1/logs/access?page=${app.accessPage}&per_page=${PER_PAGE}`, { token: app.token });
      $("access").replaceChildren(...r.entries.map((e) => h("tr", { "data-access": e.id },
        h("td", {}, when(e.time)), h("td", {}, "relay " + e.relay), h("td", {}, e.cause), h("td", {}, e.actor),
        h("td", { class: "mono" }, e.call_guid ? "call " + e.call_guid : ""))));
      pager("access", r.page, r.total);
    } catch (err) { /* shown on the next event */ }
  }

  for (const [what, load, key] of [["logs", loadLogs, "logPage"], ["access", loadAccess, "accessPage"]]) {
    $(what + "-older").addEventListener("click", () => { app[key] += 1; load(); });
    $(what + "-newer").addEventListener("click", () => { app[key] = Math.max(1, app[key] - 1); load(); });
  }

  // -- firmware update (docs/updates.md): the agent's state, and the same update the backend sends -------
  function showUpdate(u) {
    const rows = !u || !u.enabled ? [["updates", "off (update.root is not set)"]] : [
      ["phase", u.phase], ["running", `${u.running.version} (slot ${u.running.slot})`],
      ["slots", Object.entries(u.slots).map(([s, v]) => `${s}: ${v || "empty"}`).join(", ")],
      ["on trial", u.trial ? `${u.trial.version} in slot ${u.trial.slot}, start ${u.trial.boots} of ${u.trial.max_boots}`
        + (u.trial.problems.length ? `: ${u.trial.problems.join("; ")}` : "") : "no"],
      ["download", u.progress ? `${u.progress.version}: ${u.progress.downloaded} of ${u.progress.size} bytes` : "none"],
      ["last", u.last ? `${u.last.result} ${u.last.version}` + (u.last.reason ? `: ${u.last.reason}` : "") : "none"],
    ];
    $("update-state").replaceChildren(...rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, String(v)))));
  }

  $("update-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let release;
    try {
      release = JSON.parse($("update-release").value);
    } catch (err) {
      say("update-status", `Not JSON: ${err.message}`, "bad");
      return;
    }
    try {
      const r = await api("/api/v1/update", { method: "POST", token: app.token,
                                              body: { ...release, force: $("update-force").checked } });
      say("update-status", r.message, "ok");
      showUpdate(r.update);
    } catch (err) {
      say("update-status", `Not started: ${err.message} (${err.code})`, "bad");
    }
  });

  // -- password -------------------------------------------------------------------------------------------
  $("pw-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("/api/v1/auth/password", { method: "POST", token: app.token,
        body: { current_password: $("pw-current").value, new_password: $("pw-new").value } });
      $("pw-current").value = "";
      $("pw-new").value = "";
      // Every earlier session ended with the change; this page carries on with the new one.
      app.token = r.token;
      sessionStorage.setItem("panel.installer.token", r.token);
      if (app.stream) app.stream.stop();
      app.stream = events("/api/v1/events/stream?after=now", r.token, onEvent, onStream);
      say("pw-status", r.message, "ok");
    } catch (err) {
      say("pw-status", `${err.message} (${err.code})`, "bad");
    }
  });

  setState("signedout");
  const saved = sessionStorage.getItem("panel.installer.token");
  if (saved) start(saved).catch(() => { sessionStorage.removeItem("panel.installer.token"); setState("signedout"); });
})();
