// Live regions: a region names the events that concern it (data-live-on) and where its fresh
// HTML is (data-live-src); an event from the daemon fetches it again. One fetch per region at a
// time; an event arriving meanwhile fetches once more when it ends. No timers poll anything.
"use strict";
(function () {
  const status = document.getElementById("live-status");
  const regions = Array.from(document.querySelectorAll("[data-live-src]"));
  const busy = new Map();

  async function refresh(region) {
    if (busy.get(region)) { busy.set(region, "again"); return; }
    busy.set(region, true);
    try {
      const response = await fetch(region.dataset.liveSrc, { credentials: "same-origin" });
      if (response.ok) {
        region.innerHTML = await response.text();
        startCountdowns(region);
      }
    } finally {
      const again = busy.get(region) === "again";
      busy.delete(region);
      if (again) refresh(region);
    }
  }

  function listen() {
    const source = new EventSource("/events");
    const names = new Set();
    regions.forEach((r) => r.dataset.liveOn.split(" ").forEach((n) => names.add(n)));
    names.forEach((name) => source.addEventListener(name, () => {
      regions.filter((r) => r.dataset.liveOn.split(" ").includes(name)).forEach(refresh);
    }));
    source.addEventListener("ready", () => {
      if (status) status.textContent = "Live: this page updates by itself.";
      document.body.dataset.live = "ready";
    });
    source.onerror = () => {
      if (status) status.textContent = "Live updates paused: reconnecting…";
      document.body.dataset.live = "";
    };
  }

  // The one clock on a page: a pairing code's seconds left, counted down where it is shown.
  function startCountdowns(root) {
    root.querySelectorAll("[data-countdown]").forEach((element) => {
      const end = Date.now() + Number(element.dataset.countdown) * 1000;
      const tick = () => {
        const left = Math.max(0, Math.round((end - Date.now()) / 1000));
        element.textContent = String(left);
        if (left > 0 && element.isConnected) window.setTimeout(tick, 1000);
      };
      tick();
    });
  }

  startCountdowns(document);
  if (regions.length) listen();
  else if (status) status.hidden = true;
})();
