"use strict";
// The annotation page: shows a question, sends the answer, shows the next one.
// An answer is sent until the server has stored it (retrying through lost connections and
// server restarts); the server stores a repeated identical answer once, so nothing doubles.
(() => {
  const $ = (id) => document.getElementById(id);
  const SLOTS = ["reference", "a", "b"];
  let annotator = null;
  let current = null;
  let shownAt = 0;
  let busy = false;

  const say = (text) => { $("status").textContent = text || ""; };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const state = (name) => { document.body.dataset.state = name; };

  // fetch, retried on network errors and 5xx until the server answers; returns {status, body}
  async function call(url, options) {
    let delay = 500;
    for (;;) {
      let response = null;
      try {
        response = await fetch(url, { ...options, credentials: "same-origin", cache: "no-store" });
      } catch (err) {
        response = null;
      }
      if (response && response.status < 500) {
        say("");
        const body = await response.json().catch(() => ({}));
        return { status: response.status, body };
      }
      say("Connection to the server lost; retrying. Your answer is kept.");
      state("offline");
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }

  function setButtons(enabled) {
    for (const side of ["a", "b"]) $("choose-" + side).disabled = !enabled;
  }

  function progress(p) {
    $("count").textContent = `${p.done} / ${p.total}`;
    $("fill").style.width = p.total ? `${(100 * p.done) / p.total}%` : "0";
    $("bar").setAttribute("aria-valuenow", String(p.done));
    $("bar").setAttribute("aria-valuemax", String(p.total));
    document.body.dataset.done = String(p.done);
  }

  function showLogin(message) {
    $("task").hidden = true;
    $("done").hidden = true;
    $("login").hidden = false;
    state("login");
    say(message);
    $("annotator").focus();
  }

  function show(reply) {
    progress(reply.progress);
    if (reply.done) {
      current = null;
      $("task").hidden = true;
      $("done").hidden = false;
      $("done-count").textContent = `${reply.progress.done} answers`;
      state("done");
      return;
    }
    current = reply.item;
    setButtons(false);
    for (const side of ["a", "b"]) $("choose-" + side).classList.remove("chosen");
    $("login").hidden = true;
    $("done").hidden = true;
    $("task").hidden = false;
    state("loading");
    let pending = SLOTS.length;
    for (const slot of SLOTS) {
      const img = $("img-" + slot);
      const url = `/api/image/${current}/${slot}`;
      let tries = 0;
      img.onload = () => {
        if (--pending === 0) ready();
      };
      img.onerror = async () => {
        say("An image did not load; retrying.");
        await sleep(Math.min(500 * 2 ** tries, 4000));
        tries += 1;
        img.src = `${url}?retry=${tries}`;
      };
      img.src = url;
    }
  }

  function ready() {
    say("");
    setButtons(true);
    shownAt = performance.now();
    state("ready");
  }

  async function next() {
    const reply = await call(`/api/next?annotator=${encodeURIComponent(annotator)}`);
    if (reply.status !== 200) {
      showLogin(reply.body.error || `The server refused (${reply.status}).`);
      return;
    }
    show(reply.body);
  }

  async function answer(side) {
    if (busy || !current || $("choose-" + side).disabled) return;
    busy = true;
    setButtons(false);
    $("choose-" + side).classList.add("chosen");
    state("sending");
    const ms = Math.round(performance.now() - shownAt);
    const reply = await call("/api/answer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ annotator, item: current, answer: side, ms }),
    });
    busy = false;
    if (reply.status === 200) {
      show(reply.body.next);
    } else if (reply.status === 409 || reply.status === 404) {
      say(reply.body.error);
      await next();
    } else {
      say(reply.body.error || `The server refused the answer (${reply.status}).`);
      $("choose-" + side).classList.remove("chosen");
      setButtons(true);
      state("ready");
    }
  }

  async function start(id) {
    annotator = id;
    localStorage.setItem("perface-annotator", id);
    const url = new URL(location.href);
    url.searchParams.set("annotator", id);
    history.replaceState(null, "", url);
    $("who").textContent = id;
    await next();
  }

  document.addEventListener("keydown", (event) => {
    if ($("task").hidden || event.altKey || event.ctrlKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    if (key === "a" || key === "arrowleft") answer("a");
    else if (key === "b" || key === "arrowright") answer("b");
  });
  for (const side of ["a", "b"]) $("choose-" + side).addEventListener("click", () => answer(side));
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("annotator").value.trim());
  });

  const given = new URLSearchParams(location.search).get("annotator") || localStorage.getItem("perface-annotator");
  if (given) start(given);
  else showLogin("");
})();
