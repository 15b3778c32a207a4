// The wiring card: the 40-pin header as the configuration wires it (GET /api/v1/config/schema pins), each
// input and relay coloured by its live state (the page's state reads), and, in simulation, the call
// buttons pressed through the mock pins.
"use strict";

(() => {
  const { $, h, say, api } = Panel;
  // Header positions that are not GPIO: power and ground.
  const POWER = { 1: "3V3", 2: "5V", 4: "5V", 6: "GND", 9: "GND", 14: "GND", 17: "3V3", 20: "GND", 25: "GND",
                  30: "GND", 34: "GND", 39: "GND" };
  const wiring = window.wiring = { pins: [], header: {} };

  function cell(pos) {
    const bcm = wiring.header[pos];
    const use = wiring.pins.find((p) => p.header === pos);
    const label = use ? use.name : POWER[pos] || (bcm !== undefined ? "" : "");
    return h("div", { class: "pin " + (use ? use.kind : POWER[pos] ? "power" : "free") + (pos % 2 ? " odd" : " even"),
                      role: "cell", "data-header": pos, "data-live": use && use.live, title: use ? use.key : "" },
      h("span", { class: "pos" }, String(pos)),
      h("span", { class: "gpio" }, bcm !== undefined ? "GPIO" + bcm : ""),
      h("span", { class: "use" }, label),
      use && use.live ? h("span", { class: "pill off", "data-state": "off" }, "–") : null);
  }

  function draw() {
    const rows = [];
    for (let pos = 1; pos <= 40; pos += 2) rows.push(h("div", { class: "pinrow", role: "row" }, cell(pos), cell(pos + 1)));
    $("pins").replaceChildren(...rows);
  }

  function update(state) {
    for (const el of document.querySelectorAll("#pins [data-live]")) {
      const live = el.getAttribute("data-live");
      const pill = el.querySelector(".pill");
      if (!pill) continue;
      let on = null, text = "";
      if (state.inputs[live]) {
        on = state.inputs[live].active;
        text = state.inputs[live].stuck ? "stuck" : on ? "active" : "at rest";
      } else if (state.door.relays[live]) {
        on = state.door.relays[live].energised;
        text = on ? "energised" : "off";
      }
      if (on === null) continue;
      pill.textContent = text;
      pill.className = "pill " + (on ? "on" : "off");
      pill.setAttribute("data-state", on ? "on" : "off");
    }
  }

  async function load(token) {
    try {
      const r = await api("/api/v1/config/schema", { token });
      wiring.pins = r.pins;
      wiring.header = Object.fromEntries(Object.entries(r.header).map(([pos, bcm]) => [Number(pos), bcm]));
      draw();
      if (window.app && window.app.lastState) update(window.app.lastState);
      const health = await api("/api/v1/health/details", { token });
      simButtons(health.simulated, r.pins);
    } catch (err) {
      say("wiring-status", `Wiring unavailable: ${err.message} (${err.code || "error"})`, "bad");
    }
  }

  // A press as long as a finger's: the panel debounces, so a click holds the pin for a moment.
  function simButtons(simulated, pins) {
    Panel.show("simbuttons", simulated);
    if (!simulated) return;
    const buttons = pins.filter((p) => p.live && p.live.startsWith("button:")).map((p) => p.live.slice(7));
    $("simbuttons-row").replaceChildren(...buttons.map((id) => h("button", { "data-press": id, onclick: async () => {
      try {
        await api(`/api/v1/sim/buttons/${encodeURIComponent(id)}/hold`, { method: "POST", body: { seconds: 0.2 } });
        say("wiring-status", `Pressed ${id}: the unit's residents ring`, "ok");
      } catch (err) {
        say("wiring-status", `${err.message} (${err.code || "error"})`, "bad");
      }
    } }, "Press " + id)));
  }

  document.addEventListener("panel:signedin", (e) => load(e.detail.token));
  document.addEventListener("panel:state", (e) => update(e.detail));
  document.addEventListener("panel:config", () => { if (window.app && window.app.token) load(window.app.token); });
})();
