/// The operator dashboard served at `/ui`: one self-contained page (inline CSS and JS, no CDN, no build
/// step). It polls `GET /api/v1/pools` every second and shows, per pool, one row per backend: state
/// (coloured), weights, active connections, requests per second (from the difference between two
/// polls), errors, p50/p99 latency and the last health check, with Drain and Enable buttons that send
/// `PATCH /api/v1/pools/{pool}/backends/{addr}`.
///
/// The token is asked for once (`prompt`, on the first change or on a 401) and kept in
/// `sessionStorage`. Text from the API is only ever inserted with `textContent`, never `innerHTML`.
/// Hooks for tests: `tr.backend[data-address][data-state]`, `td.state`, `#status`.
public enum Dashboard {
    public static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Fulcrum</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
          h1 { font-size: 1.4em; margin: 0 0 .3em; }
          h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
          h2 .meta { font-weight: normal; color: #666; font-size: .9em; }
          .badge { display: inline-block; padding: 0 .5em; border-radius: 3px; font-size: .85em;
                   font-weight: normal; color: #fff; background: #c0392b; margin-left: .4em; }
          .badge.backups { background: #d68910; }
          #status { padding: .3em .6em; border-radius: 3px; background: #eef; display: inline-block; }
          #status.error { background: #fdecea; color: #a61b1b; font-weight: bold; }
          table { border-collapse: collapse; background: #fff; min-width: 70%; }
          th, td { border-bottom: 1px solid #ddd; padding: .35em .7em; text-align: left; white-space: nowrap; }
          th { background: #f0f0f0; font-weight: 600; }
          td.check { white-space: normal; max-width: 22em; }
          td.num { text-align: right; font-variant-numeric: tabular-nums; }
          td.state span { display: inline-block; min-width: 5.5em; text-align: center; padding: .1em .4em;
                          border-radius: 3px; color: #fff; font-weight: 600; }
          .s-up span { background: #2e9d4a; }
          .s-down span { background: #d33; }
          .s-ejected span { background: #e8730c; }
          .s-draining span { background: #f2c200; color: #222 !important; }
          .s-disabled span { background: #999; }
          .check-fail { color: #a61b1b; }
          .muted { color: #888; }
          button { font: inherit; padding: .1em .7em; margin-right: .3em; cursor: pointer; }
        </style>
        </head>
        <body>
        <h1>Fulcrum</h1>
        <div id="status">loading…</div>
        <div id="pools"></div>
        <script>
        "use strict";
        const TOKEN_KEY = "fulcrum.token";
        const previous = new Map(); // "pool address" -> {requests, time}
        let pollTimer = null;
        let actionError = null; // a failed change stays visible until clicked away or the next change

        function el(tag, attrs, ...children) {
          const node = document.createElement(tag);
          for (const [key, value] of Object.entries(attrs || {})) {
            if (key === "class") node.className = value;
            else if (key.startsWith("data-")) node.setAttribute(key, value);
            else node[key] = value;
          }
          for (const child of children) {
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
          }
          return node;
        }

        function setStatus(text, isError) {
          const status = document.getElementById("status");
          status.textContent = text;
          status.className = isError ? "error" : "";
        }

        function token(ask) {
          let value = sessionStorage.getItem(TOKEN_KEY);
          if (!value && ask) {
            value = (window.prompt("Fulcrum admin token (kept for this tab only):") || "").trim();
            if (value) sessionStorage.setItem(TOKEN_KEY, value);
          }
          return value || null;
        }

        async function api(method, path, body) {
          const headers = {};
          const bearer = token(method !== "GET");
          if (bearer) headers["Authorization"] = "Bearer " + bearer;
          if (body !== undefined) headers["Content-Type"] = "application/json";
          const response = await fetch(path, {
            method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body)
          });
          let json = null;
          try { json = await response.json(); } catch (e) { /* not JSON */ }
          if (!response.ok) {
            if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
            const what = json && json.error
              ? json.error + (json.detail ? ": " + json.detail : "") : response.statusText;
            throw new Error(method + " " + path + ": " + what + " (HTTP " + response.status + ")");
          }
          return json;
        }

        function fmt(value, digits) {
          if (value === null || value === undefined) return "—";
          return Number.isInteger(value) ? String(value) : value.toFixed(digits);
        }

        function rate(pool, backend, now) {
          const key = pool + " " + backend.address;
          const last = previous.get(key);
          previous.set(key, { requests: backend.requests, time: now });
          if (!last || now <= last.time || backend.requests < last.requests) return "—";
          return ((backend.requests - last.requests) * 1000 / (now - last.time)).toFixed(1);
        }

        function lastCheck(check) {
          if (!check) return el("span", { class: "muted" }, "—");
          const ms = check.age_ms;
          const age = typeof ms !== "number" ? ""
            : " · " + (ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s") + " ago";
          return el("span", { class: check.success ? "" : "check-fail" },
            (check.success ? "ok" : "failed") + (check.detail ? " · " + check.detail : "") + age);
        }

        async function change(pool, address, state) {
          try {
            const path = "/api/v1/pools/" + encodeURIComponent(pool) + "/backends/" + encodeURIComponent(address);
            await api("PATCH", path, { state });
            actionError = null;
            setStatus(pool + " " + address + ": " + state, false);
            poll();
          } catch (error) {
            actionError = error.message;
            setStatus(actionError, true);
          }
        }

        function backendRow(pool, backend, now) {
          const state = String(backend.state);
          const address = String(backend.address);
          const drain = el("button", { type: "button", disabled: backend.admin === "draining" }, "Drain");
          drain.addEventListener("click", () => change(pool, address, "draining"));
          const enable = el("button", { type: "button", disabled: backend.admin === "enabled" }, "Enable");
          enable.addEventListener("click", () => change(pool, address, "enabled"));
          return el("tr", { class: "backend", "data-address": address, "data-state": state },
            el("td", {}, address, backend.backup ? el("span", { class: "muted" }, " (backup)") : ""),
            el("td", { class: "state s-" + state, title: "admin: " + backend.admin }, el("span", {}, state)),
            el("td", { class: "num" }, fmt(backend.weight, 0) + " / " + fmt(backend.effective_weight, 2)),
            el("td", { class: "num" }, fmt(backend.active_connections, 0)),
            el("td", { class: "num" }, rate(pool, backend, now)),
            el("td", { class: "num" }, fmt(backend.errors, 0)),
            el("td", { class: "num" }, fmt(backend.latency_p50_ms, 1) + " / " + fmt(backend.latency_p99_ms, 1)),
            el("td", { class: "check" }, lastCheck(backend.last_check)),
            el("td", {}, drain, enable));
        }

        function poolSection(pool, now) {
          const name = String(pool.name);
          const title = el("h2", {}, name + " ",
            el("span", { class: "meta" }, pool.algorithm + " · version " + pool.version));
          if (pool.no_backend_available) title.append(el("span", { class: "badge" }, "no backend available"));
          if (pool.using_backups) title.append(el("span", { class: "badge backups" }, "using backups"));
          const head = el("tr", {}, ...["backend", "state", "weight / effective", "active conns", "req/s",
            "errors", "p50 / p99 ms", "last check", ""].map(text => el("th", {}, text)));
          const body = el("tbody", {}, ...(pool.backends || []).map(b => backendRow(name, b, now)));
          const table = el("table", {}, el("thead", {}, head), body);
          return el("section", { class: "pool", "data-pool": name }, title, table);
        }

        async function poll() {
          clearTimeout(pollTimer);
          try {
            const json = await api("GET", "/api/v1/pools");
            const now = performance.now();
            document.getElementById("pools").replaceChildren(...(json.pools || []).map(p => poolSection(p, now)));
            if (actionError) setStatus(actionError, true);
            else setStatus("updated " + new Date().toLocaleTimeString(), false);
          } catch (error) {
            if (/HTTP 401/.test(error.message) && token(true)) { pollTimer = setTimeout(poll, 0); return; }
            setStatus(error.message, true);
          }
          pollTimer = setTimeout(poll, 1000);
        }

        document.getElementById("status").addEventListener("click", () => {
          actionError = null;
          setStatus("", false);
        });
        poll();
        </script>
        </body>
        </html>
        """#
}
