// The configuration as forms, one per section, generated from the panel's config models
// (GET /api/v1/config/schema: the same descriptions, bounds and units as docs/configuration.md).
// Each key shows when a change takes effect: now (live), after a restart, or only by editing the file on
// the panel (local-only: shown read-only). A section is saved as one change (PATCH /api/v1/config): the
// panel validates the whole result and either applies all of it or nothing, naming every bad key; the
// form puts each problem under its key.
"use strict";

(() => {
  const { $, h, say, api } = Panel;
  const cf = window.configForms = { schema: null, apply: {}, file: null, config: null, pending: [], tab: "panel" };
  const PILL = { live: ["on", "now", "applies at once"], restart: ["warn", "restart", "saved now, applies after a restart"],
                 "local-only": ["off", "file", "changed only in the config file on the panel"] };

  const generic = (path) => path.replace(/\[\d+\]/g, "[]");
  const applyOf = (path) => cf.apply[generic(path)] || "local-only";

  // A schema node with $ref, anyOf [X, null] and single allOf folded in; the field's own words win.
  function resolve(s) {
    if (!s) return {};
    if (s.$ref) {
      const { $ref, ...rest } = s;
      const target = resolve(cf.schema.$defs[$ref.split("/").pop()]);
      return { ...target, ...rest, description: rest.description || target.description };
    }
    if (s.anyOf) {
      const { anyOf, ...rest } = s;
      const real = anyOf.filter((x) => x.type !== "null");
      const nullable = real.length < anyOf.length;
      if (real.length === 1) {
        const target = resolve(real[0]);
        return { ...target, ...rest, description: rest.description || target.description, nullable };
      }
      return { ...rest, type: "json", nullable };
    }
    if (s.allOf && s.allOf.length === 1) {
      const { allOf, ...rest } = s;
      return { ...resolve(allOf[0]), ...rest };
    }
    return s;
  }

  const isObject = (r) => r.type === "object" && r.properties;

  function allowed(r) {
    const lo = r.minimum ?? r.exclusiveMinimum, hi = r.maximum ?? r.exclusiveMaximum;
    const unit = r.unit ? " " + r.unit : "";
    if (r.enum) return "one of " + r.enum.map((x) => JSON.stringify(x)).join(", ");
    if (lo !== undefined && hi !== undefined) return `${r.type === "integer" ? "a whole number" : "a number"} from ${lo} to ${hi}${unit}`;
    if (lo !== undefined) return `at least ${lo}${unit}`;
    if (hi !== undefined) return `at most ${hi}${unit}`;
    if (r.type === "boolean") return "on or off";
    if (r.type === "integer") return "a whole number" + unit;
    if (r.type === "number") return "a number" + unit;
    if (r.type === "string") return r.maxLength ? `text, up to ${r.maxLength} characters` : "text";
    return "a JSON value, e.g. [5, 6] or \"text\"";
  }

  function field(r, value, path) {
    const ap = applyOf(path);
    const id = "cfg-" + path;
    const kind = r.enum ? "enum" : r.const !== undefined ? "enum" : r.type;
    let input;
    if (kind === "enum") {
      const opts = r.enum || [r.const];
      input = h("select", { id },
        r.nullable ? h("option", { value: "" }, "(not set)") : null,
        ...opts.map((o) => h("option", { value: JSON.stringify(o), selected: o === value }, String(o))));
    } else if (kind === "boolean") {
      input = h("input", { id, type: "checkbox", checked: value === true });
    } else if (kind === "integer" || kind === "number") {
      input = h("input", { id, type: "number", value: value ?? "", min: r.minimum ?? r.exclusiveMinimum,
                           max: r.maximum ?? r.exclusiveMaximum, step: kind === "integer" ? 1 : "any" });
    } else if (kind === "string") {
      input = h("input", { id, type: "text", value: value ?? "", maxlength: r.maxLength });
    } else {
      input = h("input", { id, type: "text", class: "mono", "data-json": "1",
                           value: value === undefined || value === null ? "" : JSON.stringify(value) });
    }
    input.setAttribute("data-input", path);
    const [cls, word, meaning] = PILL[ap];
    const said = r.description ? r.description.replace(/\.?$/, ".") : "";
    const help = [said, "Allowed: " + allowed(r) + (r.nullable ? "; empty: not set" : "") + "."];
    if (ap === "local-only") {
      input.disabled = true;
      help.push(`Change it in ${cf.file || "the config file"} on the panel, then restart the panel.`);
    }
    const pending = cf.pending.includes(path);
    return h("div", { class: "field", "data-key": path, "data-apply": ap, "data-orig": JSON.stringify(value ?? null),
                      "data-allowed": allowed(r) },
      h("label", { for: id }, h("span", { class: "mono" }, path), " ",
        h("span", { class: "pill " + cls, title: meaning }, word),
        pending ? h("span", { class: "pill warn", "data-pending": "1" }, "waiting for a restart") : null),
      input,
      h("p", { class: "small" }, help.filter(Boolean).join(" ")),
      h("p", { class: "field-error", role: "alert", "data-error-for": path }));
  }

  function fields(s, value, path) {
    const r = resolve(s);
    if (isObject(r)) {
      if (value === null || value === undefined) {
        return [h("p", { class: "small", "data-absent": path }, `${path} is not configured on this panel. Add a `
          + `[${path}] table to ${cf.file || "the config file"} on the panel (config/panel.example.toml shows it).`)];
      }
      return Object.entries(r.properties).flatMap(([k, sub]) => fields(sub, value[k], `${path}.${k}`));
    }
    if (r.type === "array" && r.items && isObject(resolve(r.items))) {
      return (value || []).map((item, i) => h("fieldset", { class: "item" },
        h("legend", {}, `${path}[${i}]` + (item && item.id ? ` — ${item.id}` : "")),
        ...fields(r.items, item, `${path}[${i}]`)));
    }
    return [field(r, value, path)];
  }

  function read(input) {
    if (input.type === "checkbox") return input.checked;
    if (input.tagName === "SELECT") return input.value === "" ? null : JSON.parse(input.value);
    const text = input.value.trim();
    if (text === "") return null;
    if (input.type === "number") return Number(text);
    if (input.getAttribute("data-json")) {
      try { return JSON.parse(text); } catch (e) { throw new Error("is not JSON; write e.g. [5, 6] or \"text\""); }
    }
    return input.value;
  }

  function showError(form, key, text) {
    const fieldEl = [...form.querySelectorAll(".field")].find((f) => f.dataset.key === key)
      || [...form.querySelectorAll(".field")].find((f) => key.startsWith(f.dataset.key + ".")
                                                       || f.dataset.key.startsWith(key + ".") || f.dataset.key.startsWith(key + "["));
    if (!fieldEl) return false;
    fieldEl.querySelector(".field-error").textContent = text;
    fieldEl.querySelector("[data-input]").setAttribute("aria-invalid", "true");
    fieldEl.classList.add("invalid");
    return true;
  }

  function check(form, input) {
    const key = input.getAttribute("data-input");
    const fieldEl = input.closest(".field");
    fieldEl.classList.remove("invalid");
    input.removeAttribute("aria-invalid");
    fieldEl.querySelector(".field-error").textContent = "";
    try { read(input); } catch (err) { showError(form, key, `${key} ${err.message}`); return false; }
    if (!input.checkValidity()) {
      showError(form, key, `${key}: ${input.value} is not allowed; expected ${fieldEl.dataset.allowed}`);
      return false;
    }
    return true;
  }

  async function save(e, name, form) {
    e.preventDefault();
    const dryRun = (e.submitter && e.submitter.value) !== "save";
    const status = form.querySelector("[data-status]");
    const set = {}, unset = [];
    let bad = 0;
    for (const input of form.querySelectorAll("[data-input]")) {
      if (input.disabled) continue;
      if (!check(form, input)) { bad += 1; continue; }
      const value = read(input);
      if (JSON.stringify(value) === input.closest(".field").dataset.orig) continue;
      if (value === null) unset.push(input.getAttribute("data-input"));
      else set[input.getAttribute("data-input")] = value;
    }
    if (bad) { say(status.id, `${bad} key(s) need another value (marked below); nothing was saved`, "bad"); return; }
    if (!Object.keys(set).length && !unset.length) { say(status.id, "Nothing changed", "warn"); return; }
    try {
      const r = await api("/api/v1/config", { method: "PATCH", token: window.app.token,
                                              body: { set, unset, dry_run: dryRun } });
      say(status.id, r.message, "ok");
      if (!dryRun) await window.app.loadConfig();  // redraws every form with the values in force
      if (!dryRun) say("config-status", r.message, r.restart_required.length ? "warn" : "ok");
    } catch (err) {
      const problems = err.errors || [];
      const unplaced = problems.filter((p) => {
        const m = p.match(/^([A-Za-z0-9_.[\]]+)(: |$)/);
        return !(m && showError(form, m[1], err.code === "config_local_only"
          ? `${m[1]} is changed only in ${cf.file || "the config file"} on the panel` : p));
      });
      say(status.id, `Nothing was saved: ${unplaced.length ? unplaced.join("; ") : err.message} (${err.code})`, "bad");
    }
  }

  function render() {
    if (!cf.schema || !cf.config) return;
    $("config-file").textContent = cf.file || "(none)";
    const names = Object.keys(cf.schema.properties);
    const tabs = h("div", { class: "row tabs", role: "tablist" }, ...names.map((n) => h("button", {
      role: "tab", "data-tab": n, "aria-selected": n === cf.tab ? "true" : "false",
      onclick: () => { cf.tab = n; render(); } }, n)));
    const forms = names.map((name) => {
      const form = h("form", { class: "cfg-section", "data-section": name, hidden: name !== cf.tab, novalidate: true },
        h("h3", {}, name),
        h("p", { class: "small" }, resolve(cf.schema.properties[name]).description || ""),
        ...fields(cf.schema.properties[name], cf.config[name], name),
        h("div", { class: "row" },
          h("button", { type: "submit", value: "check", "data-check": name }, "Check"),
          h("button", { type: "submit", class: "primary", value: "save", "data-save": name }, "Save " + name)),
        h("p", { class: "status", role: "status", id: "cfg-status-" + name, "data-status": name }));
      form.addEventListener("submit", (e) => save(e, name, form));
      form.addEventListener("change", (e) => { if (e.target.matches("[data-input]")) check(form, e.target); });
      return form;
    });
    $("config-forms").replaceChildren(tabs, ...forms);
  }

  async function loadSchema(token) {
    const r = await api("/api/v1/config/schema", { token });
    cf.schema = r.schema;
    cf.apply = r.apply;
    cf.file = r.file;
  }

  document.addEventListener("panel:config", async (e) => {
    cf.config = e.detail.config;
    cf.pending = e.detail.restart_required;
    try {
      if (!cf.schema) await loadSchema(window.app.token);
      render();
    } catch (err) {
      say("config-status", `The forms are unavailable: ${err.message} (${err.code || "error"})`, "bad");
    }
  });
  document.addEventListener("panel:signedout", () => { cf.schema = null; $("config-forms").replaceChildren(); });
})();
