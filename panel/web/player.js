// A minimal WHEP client for this panel: offer with every candidate gathered, POST, apply the answer,
// DELETE to stop. It talks to its own origin only: an ?endpoint= naming another origin is refused, and
// the credential is what the user typed into the form, never a URL parameter (URLs end up in histories,
// logs and Referer headers). The pages' CSP (connect-src 'self') holds the same line in the browser.
// window.player exposes its state for automated checks.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const player = window.player = { state: "idle", error: null, resource: null, messages: [], pc: null, channel: null };
  $("talk").checked = params.get("talk") === "1";

  function show(text) { player.state = text; $("status").textContent = text; }

  // A URL on this page's own origin, or null.
  function ownOrigin(value) {
    let url;
    try { url = new URL(value, location.href); } catch (e) { return null; }
    return url.origin === location.origin ? url : null;
  }

  function headers(extra) {
    const out = { ...extra };
    if ($("token").value) out["Authorization"] = "Bearer " + $("token").value;
    return out;
  }

  async function start() {
    $("start").disabled = true;
    try {
      const endpoint = ownOrigin(params.get("endpoint") || "/api/v1/media/whep");
      if (endpoint === null) {
        throw new Error("refused: the endpoint is not on this panel (" + location.origin + "); this page sends its "
                        + "credential nowhere else");
      }
      const who = params.get("who");
      if (who) endpoint.searchParams.set("who", who);
      const pc = player.pc = new RTCPeerConnection({ iceServers: [] });
      if ($("talk").checked) {
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
        pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
      } else {
        pc.addTransceiver("audio", { direction: "recvonly" });
      }
      pc.addTransceiver("video", { direction: "recvonly" });
      const channel = player.channel = pc.createDataChannel("panel");
      channel.onmessage = (e) => player.messages.push(JSON.parse(e.data));
      const stream = new MediaStream();
      pc.ontrack = (e) => { stream.addTrack(e.track); $("video").srcObject = stream; };
      pc.onconnectionstatechange = () => show("connection " + pc.connectionState);
      await pc.setLocalDescription(await pc.createOffer());
      await Panel.gathered(pc, 2000);  // common.js
      const res = await fetch(endpoint.href, { method: "POST", headers: headers({ "Content-Type": "application/sdp" }),
                                               body: pc.localDescription.sdp, credentials: "omit",
                                               referrerPolicy: "no-referrer" });
      if (res.status !== 201) {
        const body = await res.text();
        throw new Error(res.status + " " + body);
      }
      // The session resource gets the credential too (DELETE): only if it is on this panel as well.
      const resource = ownOrigin(res.headers.get("Location") || "");
      if (resource === null) throw new Error("refused: the session resource is not on this panel");
      player.resource = resource.href;
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      show("answered");
      $("stop").disabled = false;
    } catch (e) {
      player.error = String(e);
      show("error: " + e.message);
      if (player.pc) player.pc.close();
      $("start").disabled = false;
    }
  }

  async function stop() {
    $("stop").disabled = true;
    if (player.resource) {
      await fetch(player.resource, { method: "DELETE", headers: headers({}), credentials: "omit" });
    }
    if (player.pc) player.pc.close();
    show("stopped");
    $("start").disabled = false;
  }

  $("form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("stop").addEventListener("click", stop);
  player.start = start;
  player.stop = stop;
})();
