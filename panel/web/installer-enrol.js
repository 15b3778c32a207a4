// Enrolment on the installer page (docs/enrolment.md): the code to redeem (QR and short code) while the
// panel is not enrolled, what the backend or the broker answered and what to do, the certificate in force
// and whether the broker accepts it. Every rule is the panel's; this only shows GET /api/v1/enrol.
"use strict";

(() => {
  const { $, h, say, api, show, when } = Panel;
  const enrol = window.enrol = { status: null };
  // Codes that are a normal wait, not a fault: shown as a warning, not an error.
  const WAITING = new Set(["enrol_not_redeemed", "enrol_pending"]);

  function token() { return window.app && window.app.token; }

  function row(label, value, id) {
    return h("tr", {}, h("th", {}, label), h("td", id ? { id } : {}, value));
  }

  function render(s) {
    enrol.status = s;
    const connected = !!(s.mqtt && s.mqtt.connected);
    const enrolled = s.state === "enrolled";
    const pill = $("enrol-state");
    pill.textContent = enrolled ? (connected ? "enrolled, connected" : "enrolled, not connected") : "not enrolled";
    pill.className = "pill " + (enrolled && connected ? "on" : enrolled ? "alert" : "off");
    show("enrol-code-box", !!s.code);
    if (s.code) {
      $("enrol-panel").textContent = s.code.panel_id;
      $("enrol-code").textContent = s.code.short;
      $("enrol-expires").textContent = when(s.code.expires);
      if ($("enrol-qr").getAttribute("data-uri") !== s.code.uri) {
        $("enrol-qr").src = s.qr;  // an SVG data: URI made by the panel
        $("enrol-qr").setAttribute("data-uri", s.code.uri);
      }
    }
    const rows = [row("Backend (EST)", s.est_url || "")];
    if (s.certificate) {
      rows.push(row("Certificate", `${s.certificate.serial} (valid until ${when(s.certificate.not_after)})`));
      rows.push(row("Broker", s.certificate.broker));
    }
    if (s.mqtt) {
      rows.push(row("MQTT", connected ? "connected" : (s.mqtt.last_error || "connecting…"), "enrol-mqtt"));
    }
    if (s.last_attempt) rows.push(row("Last attempt", when(s.last_attempt)));
    $("enrol-info").replaceChildren(...rows);
    show("enrol-try", !enrolled || s.again);
    show("enrol-again", enrolled && !s.again);
    const err = s.last_error;
    if (err) {
      say("enrol-status", `${err.message} (${err.code})`, WAITING.has(err.code) ? "warn" : "bad");
    } else if (enrolled && s.mqtt && !connected && s.mqtt.last_error) {
      say("enrol-status", s.mqtt.last_error, "bad");
    } else if (enrolled) {
      say("enrol-status", connected ? "Enrolled: the panel is connected to its backend with its own certificate"
                                    : "Enrolled: connecting to the broker…", connected ? "ok" : "warn");
    } else {
      say("enrol-status", s.busy ? "Asking the backend…" : "Waiting for the backend to redeem the code", "warn");
    }
  }

  async function refresh() {
    if (!token() || enrol.off) return;
    try {
      render((await api("/api/v1/enrol", { token: token() })).enrolment);
      show("enrol-card", true);
    } catch (err) {
      // Enrolment is off on this panel (no enrol.est_url; local-only, so until a restart): hidden, not asked again.
      enrol.off = err.code === "not_configured";
      show("enrol-card", !enrol.off);
      if (!enrol.off) say("enrol-status", `${err.message} (${err.code || "error"})`, "bad");
    }
  }

  // Every second while something is expected to change (a code waiting, a connection coming up), else every 5 s.
  async function loop() {
    await refresh();
    const s = enrol.status;
    const settled = s && s.state === "enrolled" && !s.again && s.mqtt && s.mqtt.connected;
    setTimeout(loop, settled ? 5000 : 1000);
  }

  async function post(path) {
    try {
      render((await api(path, { method: "POST", token: token() })).enrolment);
    } catch (err) {
      say("enrol-status", `${err.message} (${err.code || "error"})`, WAITING.has(err.code) ? "warn" : "bad");
    }
  }

  $("enrol-try").addEventListener("click", () => post("/api/v1/enrol"));
  $("enrol-again").addEventListener("click", () => post("/api/v1/enrol/again"));
  loop();
  enrol.refresh = refresh;
})();
