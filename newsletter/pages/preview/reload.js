// Reload when a template, issue, article or rate file is saved (server-sent events).
const source = new EventSource("/events?since={{ generation }}");
source.addEventListener("reload", () => location.reload());
