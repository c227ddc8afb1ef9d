// Size each frame to its email so the page, not the frame, scrolls.
for (const frame of document.querySelectorAll("iframe")) {
  frame.addEventListener("load", () => {
    frame.style.height = frame.contentDocument.documentElement.scrollHeight + "px";
  });
}
