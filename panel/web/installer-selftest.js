// The self-test card: runs POST /api/v1/selftest on the live panel and shows its table.
"use strict";

(() => {
  const { $, h, say, api } = Panel;
  const RESULT = { PASS: "on", WARN: "warn", FAIL: "alert", SKIP: "off" };

  $("selftest-go").addEventListener("click", async () => {
    const token = window.app && window.app.token;
    if (!token) return;
    $("selftest-go").disabled = true;
    say("selftest-status", "running…");
    try {
      const r = await api("/api/v1/selftest", { method: "POST", token,
                                                body: { pulse_relays: $("selftest-pulse").checked } });
      $("selftest").replaceChildren(...r.rows.map((row) => h("tr", { "data-check": row.check, "data-result": row.result },
        h("td", {}, row.check), h("td", {}, h("span", { class: "pill " + RESULT[row.result] }, row.result)),
        h("td", {}, row.detail))));
      say("selftest-status", `${r.message} in ${r.duration_s} s`, r.passed ? "ok" : "bad");
    } catch (err) {
      say("selftest-status", `${err.message} (${err.code || "error"})`, "bad");
    } finally {
      $("selftest-go").disabled = false;
    }
  });
})();
