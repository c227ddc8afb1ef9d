// Load the gates' findings (they start a browser: seconds) once the page shows, and
// outline a finding's element in both frames when the finding is clicked.
const gates = document.querySelector("#gates");
fetch(gates.dataset.src)
  .then((response) => response.text())
  .then((html) => { gates.innerHTML = html; })
  .catch((error) => { gates.textContent = "The gates did not load: " + error; });

let outlined = [];
function outline(selector) {
  for (const element of outlined) element.removeAttribute("data-gate-outline");
  outlined = [];
  for (const frame of document.querySelectorAll("iframe")) {
    const doc = frame.contentDocument;
    const element = doc && doc.querySelector(selector);
    if (!element) continue;
    if (!doc.querySelector("#gate-outline-style")) {
      const style = doc.createElement("style");
      style.id = "gate-outline-style";
      style.textContent = "[data-gate-outline] { outline: 3px solid #e11d48 !important; }";
      doc.head.appendChild(style);
    }
    element.setAttribute("data-gate-outline", "");
    element.scrollIntoView({ block: "center" });
    outlined.push(element);
  }
}
for (const kind of ["click", "keydown"]) {
  gates.addEventListener(kind, (event) => {
    if (kind === "keydown" && event.key !== "Enter") return;
    const row = event.target.closest("[data-selector]");
    if (row) outline(row.dataset.selector);
  });
}
