// gadugi dashboard: live updates and actions. No framework, no request beyond this server.
"use strict";
(function () {
  const token = document.querySelector('meta[name="gadugi-token"]').content;
  const content = document.getElementById("content");
  const live = document.getElementById("live");
  const flash = document.getElementById("flash");
  let refreshing = false, again = false;

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const url = new URL(location.href);
      url.searchParams.delete("token");
      url.searchParams.set("fragment", "1");
      const answer = await fetch(url, { credentials: "same-origin" });
      if (answer.ok) { content.innerHTML = await answer.text(); }
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  function connect() {
    const events = new EventSource("/events");
    events.addEventListener("change", refresh);
    events.onopen = () => { live.classList.add("on"); live.textContent = "live"; };
    events.onerror = () => { live.classList.remove("on"); live.textContent = "reconnecting"; };
  }

  content.addEventListener("click", async (event) => {
    const button = event.target.closest("button.action[data-action]");
    if (!button) { return; }
    button.disabled = true;
    const { action } = button.dataset;
    const orch = `/api/orchestrations/${encodeURIComponent(button.dataset.orchestration)}`;
    const path = button.dataset.task
      ? `${orch}/tasks/${encodeURIComponent(button.dataset.task)}/${action}`
      : `${orch}/${action}`;
    flash.textContent = `${action} ${button.dataset.task || button.dataset.orchestration}...`;
    try {
      const answer = await fetch(path, {
        method: "POST", credentials: "same-origin", headers: { "X-Gadugi-Token": token },
      });
      const body = await answer.json();
      flash.textContent = body.message;
    } catch (error) {
      flash.textContent = `${action} failed: ${error}`;
    }
    refresh();
  });

  if (location.search.includes("token=")) {
    // The cookie now carries the token: keep it out of the address bar and history.
    const url = new URL(location.href);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  connect();
})();
