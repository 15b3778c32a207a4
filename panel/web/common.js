// Shared by the panel's pages: API calls, the event stream, WebRTC calls, the ringer, safe DOM building.
// Plain JavaScript, no build step. Names and messages from the panel are always written as text.
"use strict";

const Panel = (() => {
  class ApiError extends Error {
    // errors: every problem the panel listed (a config change names each bad key), when it listed them
    constructor(status, code, message, errors) {
      super(message); this.status = status; this.code = code; this.errors = errors || [];
    }
  }

  const $ = (id) => document.getElementById(id);

  // Build an element; children are nodes or strings (strings become text nodes, never markup).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function show(el, on) { (typeof el === "string" ? $(el) : el).hidden = !on; }

  function say(id, text, kind) {
    const el = $(id);
    el.textContent = text || "";
    el.className = "status" + (kind ? " " + kind : "");
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
  }

  // -- the API ------------------------------------------------------------------------------------
  async function api(path, { method = "GET", body, token, signal, keepalive } = {}) {
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, signal, keepalive,
                                body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "the panel cannot be reached: " + e.message);
    }
    let data = null;
    const type = res.headers.get("content-type") || "";
    if (type.includes("application/json")) data = await res.json();
    if (!res.ok) {
      throw new ApiError(res.status, (data && data.code) || "http_" + res.status,
                         (data && data.message) || res.statusText, data && data.errors);
    }
    return data;
  }

  // A picture the API serves behind a credential, as an object URL for an <img>.
  async function picture(path, token) {
    const res = await fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!res.ok) return null;
    return URL.createObjectURL(await res.blob());
  }

  // -- server-sent events over fetch (EventSource cannot send a bearer credential) --------------------
  function events(path, token, onEvent, onState) {
    let lastId = null, stopped = false, controller = null, backoff = 500;
    async function run() {
      while (!stopped) {
        controller = new AbortController();
        try {
          const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
          if (lastId) headers["Last-Event-ID"] = lastId;
          const res = await fetch(path, { headers, signal: controller.signal });
          if (!res.ok) {
            let data = {};
            try { data = await res.json(); } catch (e) { /* not JSON */ }
            const err = new ApiError(res.status, data.code || "http_" + res.status, data.message || res.statusText);
            if (res.status === 401 || res.status === 403) { onState("refused", err); return; }
            throw err;
          }
          onState("open");
          backoff = 500;
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += decoder.decode(value, { stream: true });
            let cut;
            while ((cut = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              const ev = { id: null, event: "message", data: "" };
              for (const line of block.split("\n")) {
                if (line.startsWith(":")) continue;
                const i = line.indexOf(":");
                const field = i < 0 ? line : line.slice(0, i);
                const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
                if (field === "id") ev.id = val;
                else if (field === "event") ev.event = val;
                else if (field === "data") ev.data += (ev.data ? "\n" : "") + val;
              }
              if (ev.id) lastId = ev.id;
              if (ev.event === "revoked") { onState("refused", new ApiError(401, "token_revoked", "signed out")); return; }
              if (ev.data && ev.event !== "message") {
                try { onEvent(JSON.parse(ev.data)); } catch (e) { console.error("event handler", e); }
              }
            }
          }
        } catch (e) {
          if (stopped) return;
          onState("retrying", e);
        }
        if (stopped) return;
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10000);
      }
    }
    run();
    return { stop() { stopped = true; if (controller) controller.abort(); } };
  }

  // -- WebRTC ---------------------------------------------------------------------------------------
  async function gathered(pc, limitMs) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, limitMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  // A call with the panel: our microphone out, the entrance microphone and camera in, the data channel.
  // ``signal(sdp)`` sends the offer and returns {sdp, resource?}. ``video`` false starts audio-only.
  async function call({ signal, video, videoEl, onMessage, onState }) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    const c = { pc, mic: null, channel: null, resource: null, videoOn: !!video, muted: false, messages: [],
                pending: null };
    try {
      c.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      pc.addTransceiver(c.mic.getAudioTracks()[0], { direction: "sendrecv" });
    } catch (e) {
      // No microphone (or refused): still see and hear the visitor.
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    c.videoTransceiver = pc.addTransceiver("video", { direction: video ? "recvonly" : "inactive" });
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); videoEl.srcObject = stream; videoEl.play().catch(() => {}); };
    pc.onconnectionstatechange = () => onState && onState(pc.connectionState);
    const channel = c.channel = pc.createDataChannel("panel");
    channel.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      c.messages.push(msg);
      if (msg.type === "answer" && c.pending) { c.pending.resolve(msg.sdp); c.pending = null; }
      else if (msg.type === "error" && c.pending && msg.in_reply_to === "offer") { c.pending.reject(new Error(msg.message)); c.pending = null; }
      if (onMessage) onMessage(msg);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const answer = await signal(pc.localDescription.sdp);
    c.resource = answer.resource || null;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

    c.send = (msg) => { if (channel.readyState === "open") { channel.send(JSON.stringify(msg)); return true; } return false; };
    c.mute = (muted) => {
      c.muted = muted;
      if (c.mic) c.mic.getAudioTracks().forEach((t) => { t.enabled = !muted; });
      c.send({ type: "mute", kind: "audio", muted, target: "self" });
    };
    // Video on or off by renegotiating over the data channel (docs/media.md, The data channel).
    c.setVideo = async (on) => {
      if (on) c.send({ type: "video.request" }); else c.send({ type: "video.stop" });
      c.videoTransceiver.direction = on ? "recvonly" : "inactive";
      await pc.setLocalDescription(await pc.createOffer());
      const answered = new Promise((resolve, reject) => {
        c.pending = { resolve, reject };
        setTimeout(() => reject(new Error("no answer to the renegotiation")), 10000);
      });
      c.send({ type: "offer", sdp: pc.localDescription.sdp });
      await pc.setRemoteDescription({ type: "answer", sdp: await answered });
      c.videoOn = on;
    };
    c.close = () => {
      try { c.send({ type: "end", reason: "hangup" }); } catch (e) { /* closing anyway */ }
      if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
      pc.close();
      videoEl.srcObject = null;
    };
    return c;
  }

  // WHEP signalling for the resident and installer pages (POST the offer, answer in the body).
  function whep(token) {
    return async (sdp) => {
      const res = await fetch("/api/v1/media/whep", {
        method: "POST", headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token }, body: sdp });
      if (res.status !== 201) {
        let data = {};
        try { data = await res.json(); } catch (e) { /* not JSON */ }
        throw new ApiError(res.status, data.code || "http_" + res.status, data.message || res.statusText);
      }
      return { sdp: await res.text(), resource: res.headers.get("Location") };
    };
  }

  async function endWhep(resource, token) {
    if (!resource) return;
    try { await fetch(resource, { method: "DELETE", headers: { Authorization: "Bearer " + token } }); }
    catch (e) { /* the session ends on its own when the connection closes */ }
  }

  // -- the ringer: a generated two-tone ring (no sound files), and a notification ----------------------
  const ringer = {
    ctx: null, timer: null, ringing: false, rings: 0,
    start() {
      if (this.ringing) return;
      this.ringing = true;
      try {
        this.ctx = this.ctx || new (window.AudioContext || window.webkitAudioContext)();
        if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
      } catch (e) { this.ctx = null; }
      const ring = () => {
        this.rings += 1;
        if (!this.ctx) return;
        const t = this.ctx.currentTime;
        for (const [i, f] of [[0, 880], [1, 660], [2, 880], [3, 660]]) {
          const osc = this.ctx.createOscillator();
          const gain = this.ctx.createGain();
          osc.frequency.value = f;
          gain.gain.setValueAtTime(0.0001, t + i * 0.2);
          gain.gain.exponentialRampToValueAtTime(0.25, t + i * 0.2 + 0.02);
          gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.2 + 0.18);
          osc.connect(gain).connect(this.ctx.destination);
          osc.start(t + i * 0.2);
          osc.stop(t + i * 0.2 + 0.2);
        }
      };
      ring();
      this.timer = setInterval(ring, 2000);
    },
    stop() {
      this.ringing = false;
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
    },
  };

  function notify(title, body) {
    if (!("Notification" in window) || Notification.permission !== "granted") return null;
    try {
      const n = new Notification(title, { body, tag: "panel-call", requireInteraction: true });
      n.onclick = () => { window.focus(); n.close(); };
      return n;
    } catch (e) { return null; }
  }

  function askNotifications() {
    if ("Notification" in window && Notification.permission === "default") {
      Notification.requestPermission().catch(() => {});
    }
  }

  return { ApiError, $, h, show, say, when, api, picture, events, call, whep, endWhep, ringer, notify,
           askNotifications, gathered };
})();
